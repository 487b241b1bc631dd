"""One CSV consumer process reading a topic the relay filled: its events per second.

The consumer (``python -m consumers --sink csv``) starts in a fresh group from the earliest
offset, writes its rows to stdout sent to /dev/null, and serves its metrics; the rate counts
from its first consumed batch to the moment it has consumed every message of the topic, so
start-up and the group join are left out.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.procs import REPO, CpuMeter, peak_rss_mb, stop_process
from tests.support.net import unused_port

_CONSUMED = re.compile(rb"^audit_consumer_events_consumed_total ([0-9.e+]+)$", re.MULTILINE)


async def _consumed(session: aiohttp.ClientSession, url: str) -> float | None:
    try:
        async with session.get(url) as response:
            match = _CONSUMED.search(await response.read())
    except aiohttp.ClientError:
        return None
    return float(match.group(1)) if match else None


async def csv_consumer_rate(
    bootstrap: str,
    topic: str,
    total: int,
    *,
    log_dir: Path,
    broker: list[psutil.Process],
    within: float,
    source: Path = REPO,
) -> dict[str, Any]:
    """Consume ``total`` messages of ``topic`` with one CSV consumer; its rate and cost."""
    port = unused_port()
    args = ["-m", "consumers", "--sink", "csv", "--kafka-bootstrap", bootstrap]
    args += ["--topic", topic, "--group", f"bench-{uuid.uuid4().hex[:8]}"]
    args += ["--metrics-listen", f"127.0.0.1:{port}", "--log-level", "WARNING"]
    log_path = log_dir / f"consumer-{topic}.log"
    with log_path.open("wb") as log:
        consumer = await asyncio.create_subprocess_exec(
            sys.executable, *args, cwd=source, stdout=asyncio.subprocess.DEVNULL, stderr=log
        )
    process = psutil.Process(consumer.pid)
    meter = CpuMeter({"consumer": [process], "broker": broker})
    url = f"http://127.0.0.1:{port}/metrics"
    first: tuple[float, float] | None = None
    consumed = 0.0
    deadline = time.monotonic() + within
    try:
        async with aiohttp.ClientSession() as session:
            while consumed < total and time.monotonic() < deadline:
                if consumer.returncode is not None:
                    raise RuntimeError(f"consumer exited:\n{log_path.read_text()[-2000:]}")
                consumed = await _consumed(session, url) or 0.0
                if first is None and consumed > 0:
                    first = (time.monotonic(), consumed)
                    meter.start()
                await asyncio.sleep(0.05)
        finished = time.monotonic()
        cpu = meter.stop() if first is not None else {}
        rss = peak_rss_mb(process)
    finally:
        await stop_process(consumer, 30.0, "consumer")
    if first is None:
        raise RuntimeError(f"consumer consumed nothing in {within}s:\n{log_path.read_text()}")
    started, at_start = first
    return {
        "events": int(consumed),
        "of": total,
        "finished": consumed >= total,
        "events_per_s": round((consumed - at_start) / (finished - started), 1),
        "peak_rss_mb": round(rss, 1),
        **cpu,
    }
