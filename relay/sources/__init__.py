"""The sources ``audit-source`` reads audit events from, by the kind given as its first argument.

The contract is ``relay.sources.base.Source``; to add a source, add one module with a ``Source``
subclass and one line below.
"""

from __future__ import annotations

from relay.sources.base import Source
from relay.sources.cloudwatch import CloudWatchSource
from relay.sources.eventhubs import EventHubsSource
from relay.sources.file import FileSource
from relay.sources.pubsub import PubSubSource

SOURCES: dict[str, type[Source]] = {
    "cloudwatch": CloudWatchSource,
    "eventhubs": EventHubsSource,
    "file": FileSource,
    "pubsub": PubSubSource,
}

__all__ = ["SOURCES", "Source"]
