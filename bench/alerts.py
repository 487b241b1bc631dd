"""The alerts consumer's evaluation speed with a large rules set, in events/s per core.

Runs in this process, on CPU time (``time.process_time``): the events of
``audit_common.samples`` encoded as the relay publishes them, each decoded as the consumer
decodes a Kafka record and evaluated by a rules set of the default rules plus as many again
(copies with other names, each with its own allow-list of users). The baseline, measured in the
same run on the same events, is the decoding alone: what every consumer whose sink reads the
whole event (``event.data``) pays anyway. The relay's own figure (one worker, from
``bench/results/latest.json`` when present) tells whether one alerts consumer keeps up with one
relay worker.

    .venv/bin/python -m bench.alerts [--events 30000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import yaml

from audit_common.samples import CLUSTERS, sample_events
from consumers.events import decode
from consumers.rules.ruleset import DEFAULT_RULES, RuleSet, load_rules
from consumers.sinks.alerts_event import for_rules

RESULTS = Path(__file__).parent / "results" / "latest.json"
ALLOWED_USERS = [f"svc-bench-{n}@example.com" for n in range(50)]


def published_values(count: int) -> list[bytes]:
    """``count`` sample events over every cluster, each as the value of its Kafka record."""
    per_cluster = -(-count // len(CLUSTERS))
    events = [
        event for cluster in CLUSTERS for event in sample_events(per_cluster, cluster=cluster)
    ]
    return [orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **event})
            for event in events[:count]]  # fmt: skip


def doubled_rules(directory: Path) -> tuple[Path, int]:
    """A rules file with a copy of every default rule under another name, each also allowing
    its own list of users; and how many rules it adds."""
    items = yaml.safe_load(DEFAULT_RULES.read_text())
    copies: list[dict[str, Any]] = [{"list": "bench_allowed_users", "items": ALLOWED_USERS}]
    for item in items:
        if "rule" in item:
            twin = copy.deepcopy(item)
            twin["rule"] = f"{item['rule']} (copy)"
            twin["condition"] = (
                f"({item['condition'].strip()}) and not ka.user.name in (bench_allowed_users)"
            )
            copies.append(twin)
    path = directory / "copies.yaml"
    path.write_text(yaml.safe_dump(copies, sort_keys=False))
    return path, len(copies) - 1


def per_core(work: Callable[[], int], events: int, repeat: int) -> tuple[float, int]:
    """The best of ``repeat`` passes in events per CPU-second, and what a pass returned."""
    best = float("inf")
    result = 0
    for _ in range(repeat):
        started = time.process_time()
        result = work()
        best = min(best, time.process_time() - started)
    return events / best, result


def decode_all(values: Sequence[bytes]) -> int:
    for offset, value in enumerate(values):
        decode(value, (), topic="k8s-audit", partition=0, offset=offset).data  # noqa: B018
    return 0


def evaluate_all(values: Sequence[bytes], rules: RuleSet) -> int:
    alerts = 0
    for offset, value in enumerate(values):
        event = decode(value, (), topic="k8s-audit", partition=0, offset=offset)
        alerts += len(rules.evaluate(for_rules(event)))
    return alerts


def relay_worker_figure() -> float | None:
    try:
        return float(json.loads(RESULTS.read_text())["relay_events_per_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.alerts", description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=30000, help="sample events per pass")
    parser.add_argument("--repeat", type=int, default=3, help="passes; the best counts")
    args = parser.parse_args(argv)
    values = published_values(args.events)
    with tempfile.TemporaryDirectory() as directory:
        copies, added = doubled_rules(Path(directory))
        rules = load_rules([DEFAULT_RULES, copies])
    baseline, _ = per_core(lambda: decode_all(values), len(values), args.repeat)
    alerts_rate, alerts = per_core(lambda: evaluate_all(values, rules), len(values), args.repeat)
    print(f"{len(values)} sample events ({len(CLUSTERS)} clusters), best of {args.repeat} passes")
    print(f"rules: the default rules and {added} copies ({2 * added} rules)")
    print(f"decode only (baseline)   {baseline:10,.0f} events/s per core")
    print(
        f"decode + evaluate        {alerts_rate:10,.0f} events/s per core"
        f"  (x{alerts_rate / baseline:.2f} of the baseline; {alerts} alerts per pass)"
    )
    relay = relay_worker_figure()
    if relay is not None:
        verdict = "keeps up" if alerts_rate >= relay else "does not keep up"
        print(
            f"one relay worker         {relay:10,.0f} events/s ({RESULTS.name}): one alerts "
            f"consumer core {verdict} (x{alerts_rate / relay:.2f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
