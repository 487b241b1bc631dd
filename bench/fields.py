"""What each field of ``consumers.rules.fields`` costs per event, against a dict lookup.

Runs in this process, on CPU time (``time.process_time``): every field, bound once as a rule
binds it, extracts its values from each of the events of ``audit_common.samples`` (decoded as
``orjson.loads`` gives them). The baseline, measured in the same run on the same events, is the
cheapest extraction there is: a closure returning ``event.get("verb", "")`` in a list. Prints the
baseline in ns per event, then each field (slowest first) as a multiple of it.

    .venv/bin/python -m bench.fields [--events 3000] [--repeat 5] [--top 20]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import orjson

from audit_common.samples import CLUSTERS, sample_events
from consumers.rules.fields import FIELDS, Value, bind_field

# An argument for the fields that need one, as a rule would write it.
ARGUMENTS = {"key": "command", "pointer": "/objectRef/resource"}


def events(count: int) -> list[dict[str, Any]]:
    per_cluster = -(-count // len(CLUSTERS))
    made = [event for cluster in CLUSTERS for event in sample_events(per_cluster, cluster=cluster)]
    return [orjson.loads(orjson.dumps(event)) for event in made[:count]]


def cost_ns(
    extract: Callable[[Mapping[str, Any]], list[Value]],
    batch: Sequence[Mapping[str, Any]],
    repeat: int,
) -> float:
    """The best of ``repeat`` passes over ``batch``, in CPU nanoseconds per event."""
    best = float("inf")
    for _ in range(repeat):
        started = time.process_time_ns()
        for event in batch:
            extract(event)
        best = min(best, time.process_time_ns() - started)
    return best / len(batch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.fields", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=3000, help="sample events per pass")
    parser.add_argument("--repeat", type=int, default=5, help="passes per field; the best counts")
    parser.add_argument("--top", type=int, default=20, help="how many of the slowest to print")
    args = parser.parse_args(argv)
    batch = events(args.events)
    baseline = cost_ns(lambda event: [event.get("verb", "")], batch, args.repeat)
    costs = sorted(
        (
            (cost_ns(bind_field(name, ARGUMENTS.get(field.arg)).extract, batch, args.repeat), name)
            for name, field in FIELDS.items()
        ),
        reverse=True,
    )
    print(f"{len(batch)} sample events, {len(costs)} fields, best of {args.repeat} passes")
    print(f"baseline [event.get('verb', '')]  {baseline:8.0f} ns per event")
    cheap = sum(1 for cost, _ in costs if cost <= 3 * baseline)
    print(f"fields within x3 of the baseline: {cheap} of {len(costs)}")
    for cost, name in costs[: args.top]:
        print(f"  {name:58} x{cost / baseline:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
