"""The processes a benchmark drives (relay, consumer) and what they cost: CPU and peak RSS.

CPU is counted from the kernel's per-process times over the measured window only; peak RSS is
each worker's high-water mark (``VmHWM``), which no sampling interval can miss. Whatever else
the machine did in the same window (other people's tests on a shared machine) is reported as
``other_cpu_cores`` so that a noisy run can be recognised.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from tests.support.net import unused_port

REPO = Path(__file__).resolve().parents[1]


def peak_rss_mb(process: psutil.Process) -> float:
    """The process's peak resident set since it started, in MiB (Linux ``VmHWM``)."""
    for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


class CpuMeter:
    """CPU used by ``processes`` (and by everything else on the machine) between two calls."""

    def __init__(self, processes: dict[str, list[psutil.Process]]) -> None:
        # An empty list (a broker given by KAFKA_BOOTSTRAP, not started here) is unknown, not 0.
        self.processes = {name: ps for name, ps in processes.items() if ps}
        self._start: dict[str, float] = {}
        self._busy_start = 0.0
        self._wall_start = 0.0

    @staticmethod
    def _busy() -> float:
        times = psutil.cpu_times()
        return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))

    def start(self) -> None:
        self._start = {name: _cpu_seconds(ps) for name, ps in self.processes.items()}
        self._busy_start = self._busy()
        self._wall_start = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self._wall_start
        used = {
            name: (_cpu_seconds(ps) - self._start[name]) / wall
            for name, ps in self.processes.items()
        }
        busy = (self._busy() - self._busy_start) / wall
        cores = {f"{name}_cpu_cores": round(value, 2) for name, value in used.items()}
        cores["other_cpu_cores"] = round(max(0.0, busy - sum(used.values())), 2)
        return cores


@dataclass
class Relay:
    """A relay started as an operator starts it, on a free port, with topics of its own."""

    workers: int
    bootstrap: str
    log_dir: Path
    extra_args: tuple[str, ...] = ()
    # Where the relay's code comes from: this checkout, or another one (a baseline to compare).
    source: Path = REPO
    topic: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=unused_port)
    process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/audits"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"relay-{self.topic}.log"

    async def start(self, within: float = 60.0) -> None:
        """Start the relay and wait until it is ready; raises RuntimeError when it is not."""
        args = ["-m", "relay", "--insecure"]
        args += ["--listen", f"127.0.0.1:{self.port}", "--kafka-bootstrap", self.bootstrap]
        args += ["--topic", self.topic, "--dead-letter-topic", f"{self.topic}.dead-letter"]
        args += ["--workers", str(self.workers), "--log-level", "WARNING", *self.extra_args]
        with self.log_path.open("wb") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *args, cwd=self.source, stdout=log, stderr=log
            )
        await self._wait_ready(within)

    async def _wait_ready(self, within: float) -> None:
        deadline = time.monotonic() + within
        ready_in_a_row = 0
        async with aiohttp.ClientSession() as session:
            # Several ready answers in a row: with --workers 2 either worker may answer.
            while ready_in_a_row < 4 * self.workers:
                assert self.process is not None
                if self.process.returncode is not None:
                    raise RuntimeError(f"relay exited:\n{self.log_path.read_text()[-2000:]}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"relay not ready within {within}s")
                try:
                    async with session.get(f"http://127.0.0.1:{self.port}/readyz") as response:
                        ready_in_a_row = ready_in_a_row + 1 if response.status == 200 else 0
                except aiohttp.ClientConnectionError:
                    ready_in_a_row = 0
                await asyncio.sleep(0.1)

    def worker_processes(self) -> list[psutil.Process]:
        """The processes that serve requests: the relay itself, or its spawned workers."""
        assert self.process is not None
        main = psutil.Process(self.process.pid)
        if self.workers == 1:
            return [main]
        return [
            child
            for child in main.children()
            if any("spawn_main" in part for part in child.cmdline())
        ]

    def all_processes(self) -> list[psutil.Process]:
        assert self.process is not None
        main = psutil.Process(self.process.pid)
        return [main, *main.children(recursive=True)]

    async def stop(self, within: float = 30.0) -> int:
        """SIGTERM and wait; its exit code. Raises RuntimeError when it does not stop in time."""
        return await stop_process(self.process, within, "relay")


async def stop_process(process: asyncio.subprocess.Process | None, within: float, name: str) -> int:
    """SIGTERM ``process`` and wait for it; killed and RuntimeError after ``within`` seconds."""
    if process is None:
        return 0
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(within):
            return await process.wait()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"{name} did not stop within {within}s") from None


def broker_process(state_dir: Path | None) -> list[psutil.Process]:
    """The broker's JVM when this benchmark started it (its pid file), else nothing."""
    if state_dir is None:
        return []
    try:
        return [psutil.Process(int((state_dir / "kafka.pid").read_text()))]
    except (OSError, ValueError, psutil.NoSuchProcess):
        return []


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": sys.version.split()[0],
        "kernel": os.uname().release,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
