"""The machine's ceiling: Kafka's own Java producer (``ProducerPerformance``, from kafka-tools).

It sends the very values the relay publishes (``--payload-file``, one event per line, drawn at
random), with acks=all, idempotence, the relay's compression, batch size and linger, to a topic
with the relay's partition count. It runs for a fixed time rather than a fixed count: the
tool prints a line per 5-second window, the first window (JVM warm-up) is left out, and the
ceiling is the mean of the others.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

from bench.procs import CpuMeter

KAFKA_VERSION = os.environ.get("KAFKA_VERSION", "4.1.1")
_WINDOW = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency"
)


def kafka_libs() -> Path:
    """The jar directory deploy/local/kafka fills (kafka-tools included)."""
    root = os.environ.get("KAFKA_CACHE_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kube-audit-relay"
    )
    return Path(root) / f"kafka-{KAFKA_VERSION}" / "libs"


def producer_props(bootstrap: str, compression: str, linger_ms: int) -> dict[str, str]:
    """The relay producer's settings, in the Java client's words."""
    return {
        "bootstrap.servers": bootstrap,
        "acks": "all",
        "enable.idempotence": "true",
        "compression.type": compression,
        "linger.ms": str(linger_ms),
        "batch.size": str(1 << 20),
        "max.request.size": str(16 << 20),
    }


async def producer_performance(
    bootstrap: str,
    topic: str,
    payload_file: Path,
    *,
    seconds: float,
    props: dict[str, str],
    broker: list[psutil.Process],
) -> dict[str, Any]:
    """Run ProducerPerformance for ``seconds`` after a 5 s warm-up window; its mean rate."""
    args = ["java", "-Xmx1g", "-cp", f"{kafka_libs()}/*"]
    args += ["-Dorg.slf4j.simpleLogger.defaultLogLevel=warn"]
    args += ["org.apache.kafka.tools.ProducerPerformance", "--topic", topic]
    args += ["--num-records", str(10**10), "--throughput", "-1"]
    args += ["--payload-file", str(payload_file), "--producer-props"]
    args += [f"{name}={value}" for name, value in props.items()]
    process = await asyncio.create_subprocess_exec(
        *args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert process.stdout is not None
    windows: list[dict[str, float]] = []
    meter = CpuMeter({"producer": [psutil.Process(process.pid)], "broker": broker})
    output: list[str] = []
    deadline = time.monotonic() + seconds + 60
    try:
        while len(windows) < 1 + max(1, round(seconds / 5)):
            remaining = deadline - time.monotonic()
            line = (await asyncio.wait_for(process.stdout.readline(), remaining)).decode()
            if not line:
                raise RuntimeError("ProducerPerformance exited:\n" + "".join(output[-20:]))
            output.append(line)
            match = _WINDOW.search(line)
            if match is None:
                continue
            if not windows:
                meter.start()  # the first window is warm-up
            windows.append({key: float(value) for key, value in match.groupdict().items()})
        cpu = meter.stop()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()
    measured = windows[1:]
    rate = sum(w["rate"] for w in measured) / len(measured)
    return {
        "events_per_s": round(rate, 1),
        "mb_per_s": round(sum(w["mb"] for w in measured) / len(measured), 2),
        "avg_latency_ms": round(sum(w["avg"] for w in measured) / len(measured), 1),
        "max_latency_ms": max(w["max"] for w in measured),
        "windows_events_per_s": [w["rate"] for w in measured],
        **cpu,
    }
