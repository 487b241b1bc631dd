"""The PNG of a full run: events/s against the ceiling, and latency, per configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def draw(results: dict[str, Any], output: Path) -> None:
    configs = results["configs"]
    labels = [f"workers {c['workers']}\nbatch {c['batch']}" for c in configs]
    positions = range(len(configs))
    figure, (rates, latency) = plt.subplots(1, 2, figsize=(12, 4.8))

    rates.bar(positions, [c["max"]["events_per_s"] for c in configs], color="tab:blue")
    ceiling = results["ceiling_events_per_s"]
    rates.axhline(ceiling, color="tab:red", linestyle="--", label="ProducerPerformance ceiling")
    rates.axhline(ceiling / 2, color="tab:red", linestyle=":", label="50% of the ceiling")
    rates.set_xticks(list(positions), labels)
    rates.set_ylabel("events/s acknowledged")
    rates.set_title("Maximum throughput")
    rates.legend(loc="lower right", fontsize="small")

    width = 0.2
    series = (
        ("max", "p50_ms", "p50 at max", -1.5),
        ("max", "p99_ms", "p99 at max", -0.5),
        ("at_75_percent", "p50_ms", "p50 at 75%", 0.5),
        ("at_75_percent", "p99_ms", "p99 at 75%", 1.5),
    )
    for phase, key, label, shift in series:
        values = [c[phase][key] for c in configs]
        latency.bar([p + shift * width for p in positions], values, width, label=label)
    latency.axhline(100, color="tab:red", linestyle="--", label="100 ms target (75% load)")
    latency.set_xticks(list(positions), labels)
    latency.set_ylabel("request latency, ms")
    latency.set_title("Latency per request")
    latency.legend(fontsize="small")

    figure.suptitle(
        f"kube-audit-relay, {results['machine']['cores']} cores ({results['machine']['cpu']})",
        fontsize="medium",
    )
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)
