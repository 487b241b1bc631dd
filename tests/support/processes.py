"""Real processes of the relay and the consumers, started as an operator would start them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass
class Process:
    """A child process whose stdout and stderr go to files, so that tests can read them."""

    args: list[str]
    popen: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path
    _files: list[IO[bytes]] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: signal.Signals) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{self.args} did not exit within {timeout}s; stderr:\n{self.stderr()[-3000:]}"
            ) from exc

    def close(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        for file in self._files:
            file.close()


class ProcessFactory:
    """Starts ``python -m <module>`` processes and kills whatever is left at teardown."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.started: list[Process] = []

    def start(self, module: str, *args: str, env: dict[str, str] | None = None) -> Process:
        index = len(self.started)
        stdout_path = self.directory / f"{module}-{index}.stdout"
        stderr_path = self.directory / f"{module}-{index}.stderr"
        stdout = stdout_path.open("wb")
        stderr = stderr_path.open("wb")
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        argv = [sys.executable, "-m", module, *args]
        popen = subprocess.Popen(argv, stdout=stdout, stderr=stderr, env=full_env)
        process = Process(argv, popen, stdout_path, stderr_path, [stdout, stderr])
        self.started.append(process)
        return process

    def close(self) -> None:
        for process in self.started:
            process.close()


def wait_for_exit_or_fail(process: Process, sig: signal.Signals, timeout: float) -> int:
    """Send ``sig`` and return the exit code, failing the test if the process hangs."""
    start = time.monotonic()
    process.signal(sig)
    code = process.wait(max(0.1, timeout - (time.monotonic() - start)))
    return code


def run_module(
    module: str, *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` to its end, as a user runs a one-shot command; its exit code
    and text output, whatever the code."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
