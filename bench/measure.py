"""One measured relay configuration: its maximum rate, its latency at 75% of it, its cost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import psutil

from bench.load import LoadResult, paced, saturate
from bench.procs import CpuMeter, Relay, peak_rss_mb
from bench.traffic import Traffic

T = TypeVar("T")


@dataclass(frozen=True)
class Timing:
    """Seconds of warm-up and of measurement for each phase."""

    warmup: float
    saturate: float
    paced: float


async def _metered(
    meter: CpuMeter, warmup: float, load: Awaitable[T]
) -> tuple[T, dict[str, float]]:
    """Run ``load``, with ``meter`` counting from the end of its warm-up to its end."""

    async def start_after_warmup() -> None:
        await asyncio.sleep(warmup)
        meter.start()

    starter = asyncio.create_task(start_after_warmup())
    result = await load
    await starter
    return result, meter.stop()


def _profile(worker: psutil.Process, seconds: float, output: Path) -> subprocess.Popen[bytes]:
    """py-spy sampling one worker (collapsed stacks, idle frames left out)."""
    py_spy = Path(sys.executable).with_name("py-spy")
    args = [str(py_spy), "record", "--pid", str(worker.pid), "--duration", str(int(seconds))]
    args += ["--rate", "100", "--format", "raw", "--nonblocking", "-o", str(output)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def measure_relay(
    relay: Relay,
    traffic: Traffic,
    *,
    senders: int,
    timing: Timing,
    broker: list[psutil.Process],
    profile_to: Path | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Saturate a started relay, then pace it at 75% of the rate it reached."""
    workers = relay.worker_processes()
    own = [psutil.Process()]
    meter = CpuMeter({"relay": relay.all_processes(), "broker": broker, "bench": own})
    profiler = None
    if profile_to is not None:
        profiler = _profile(workers[0], timing.warmup + timing.saturate, profile_to)
    load = saturate(
        relay.url, traffic, senders=senders, warmup=timing.warmup, duration=timing.saturate
    )
    at_max, cpu_max = await _metered(meter, timing.warmup, load)
    if profiler is not None:
        await asyncio.to_thread(profiler.wait, 60)
    maximum = at_max.summary() | cpu_max
    maximum["events_per_relay_cpu_s"] = _per_cpu(at_max, cpu_max)
    log(f"    max {_line(maximum)}")
    target = 0.75 * maximum["events_per_s"]
    load = paced(
        relay.url, traffic, events_per_s=target, warmup=timing.warmup, duration=timing.paced
    )
    at_75, cpu_75 = await _metered(meter, timing.warmup, load)
    three_quarters = at_75.summary() | cpu_75 | {"target_events_per_s": round(target, 1)}
    log(f"    75% {_line(three_quarters)}")
    return {
        "workers": relay.workers,
        "batch": traffic.templates[0].events,
        "senders": senders,
        "mean_body_bytes": round(traffic.mean_body_bytes),
        "topic": relay.topic,
        "max": maximum,
        "at_75_percent": three_quarters,
        "peak_rss_mb_per_worker": [round(peak_rss_mb(w), 1) for w in workers],
    }


def _per_cpu(result: LoadResult, cpu: dict[str, float]) -> float:
    cores = cpu.get("relay_cpu_cores", 0.0)
    rate = result.events / result.seconds if result.seconds else 0.0
    return round(rate / cores, 1) if cores else 0.0


def _line(summary: dict[str, Any]) -> str:
    failures = summary["failures"] or "none"
    cores = "  ".join(
        f"{name} {summary[f'{name}_cpu_cores']:.2f}"
        for name in ("relay", "broker", "other")
        if f"{name}_cpu_cores" in summary
    )
    return (
        f"{summary['events_per_s']:>9.0f} events/s  p50 {summary['p50_ms']:.0f} ms  "
        f"p99 {summary['p99_ms']:.0f} ms  max {summary['max_ms']:.0f} ms  "
        f"{cores}  failures {failures}"
    )
