"""The cyclic garbage collector's settings for processes that decode JSON in bulk.

The relay parses each request body, and a consumer each message, into many short-lived objects
that hold no reference cycles (freed by reference counting). With the default thresholds the
collector traverses them, and every older object, many times per body: a third to half of a
relay worker's CPU under load, 15-70% of a consumer's (bench/run.py, py-spy).
"""

from __future__ import annotations

import gc

# Allocations between young-generation collections (Python's default is 700).
YOUNG_THRESHOLD = 200_000


def tune_for_bulk_json() -> None:
    """Called once by a process's entry point (``relay.cli``, ``consumers.__main__``) after
    start-up: start-up objects leave the collector's view, young objects are collected rarely.
    """
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, 10, 10)
