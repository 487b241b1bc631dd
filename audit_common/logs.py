"""Logging for both programs: one format on stderr, and aiokafka's retry chatter kept short and
at the level it deserves."""

from __future__ import annotations

import logging
import sys
import time

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


class RepeatFilter(logging.Filter):
    """Lets a message template of a logger through at most once per ``interval`` seconds.

    While a broker is down aiokafka logs every reconnect attempt, and the relay's HTTP edge
    every request it answers 503; the programs log the outage themselves, once and then once
    a minute, so the repeats carry no news.
    """

    def __init__(self, prefixes: tuple[str, ...], interval: float = 60.0) -> None:
        super().__init__()
        self.prefixes = prefixes
        self.interval = interval
        self._last: dict[tuple[str, object], float] = {}
        self._suppressed: dict[tuple[str, object], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefixes):
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


# What aiokafka logs at ERROR while a new broker gets ready: the topic is being created (the
# programs wait for it themselves), the group coordinator is being elected (the offsets topic is
# created on the first group's request). Each passes by itself within seconds.
_PASSING = frozenset(
    {
        "Topic %s not found in cluster metadata",
        "Group Coordinator Request failed: %s",
        "FindCoordinator Request failed: %s",
    }
)


class PassingStateFilter(logging.Filter):
    """Lowers to INFO aiokafka's ERROR lines for states that are normal and pass by themselves
    (``_PASSING``, with an error Kafka calls retriable), so that a first start against a new
    broker prints no ERROR; they go on at INFO, and through ``RepeatFilter``."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.ERROR or not record.name.startswith("aiokafka"):
            return True
        if record.msg not in _PASSING:
            return True
        error = record.args[0] if isinstance(record.args, tuple) and record.args else None
        if isinstance(error, Exception) and not getattr(error, "retriable", False):
            return True
        record.levelno, record.levelname = logging.INFO, logging.getLevelName(logging.INFO)
        return logging.getLogger().isEnabledFor(logging.INFO)


def configure_logging(level: str = "INFO") -> None:
    """Called by each entry point: first with the default level, again once flags are parsed."""
    logging.basicConfig(level=level, stream=sys.stderr, format=FORMAT, force=True)
    for handler in logging.getLogger().handlers:
        handler.addFilter(PassingStateFilter())
        handler.addFilter(RepeatFilter(("aiokafka", "relay.edge.app")))
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLevelName(level)))
