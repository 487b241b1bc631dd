"""Logging for both programs: one format on stderr, and aiokafka's retry chatter kept short."""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Lets a message template of a logger through at most once per ``interval`` seconds.

    While a broker is down aiokafka logs every reconnect attempt (about ten lines a second);
    the programs log the outage themselves, once, so the repeats carry no news.
    """

    def __init__(self, prefix: str, interval: float = 30.0) -> None:
        super().__init__()
        self.prefix = prefix
        self.interval = interval
        self._last: dict[tuple[str, object], float] = {}
        self._suppressed: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        key = (record.name, record.msg)
        now = time.monotonic()
        if now - self._last.get(key, -self.interval) < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return False
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.msg = f"{record.msg} ({suppressed} similar lines suppressed)"
        return True


def configure_logging(level: str = "INFO") -> None:
    """Called by each entry point: first with the default level, again once flags are parsed."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(RepeatFilter("aiokafka"))
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
