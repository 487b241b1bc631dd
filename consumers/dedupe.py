"""``--dedupe-window N``: drop repeats of an event among the last N, as apiserver retries resend.

kube-apiserver re-sends a whole batch when its POST times out or fails, and the relay may send
a failed batch again, so the same event can reach Kafka twice; within one consumer process the
repeat is dropped here. A repeat is the same value byte for byte: auditID, stage and
stageTimestamp do not identify an event (clients set ``Audit-ID`` themselves, and two distinct
events may share all three), so only identical bytes count.
"""

from __future__ import annotations

from collections import OrderedDict

from consumers.events import ConsumedEvent

Key = tuple[str | None, bytes]


class Deduplicator:
    """Remembers (cluster, digest of the value) of the last ``window`` events.

    Called by the runner once per event, before the sink sees it; a window of 0 turns it off.
    """

    def __init__(self, window: int) -> None:
        self.window = window
        self._seen: OrderedDict[Key, None] = OrderedDict()

    def is_repeat(self, event: ConsumedEvent) -> bool:
        """True when ``event``'s key is among the last ``window`` keys; remembers it otherwise."""
        if self.window == 0:
            return False
        key = (event.cluster, event.digest)
        if key in self._seen:
            return True
        self._seen[key] = None
        if len(self._seen) > self.window:
            self._seen.popitem(last=False)
        return False
