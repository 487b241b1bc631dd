"""A real local S3-compatible server (deploy/local/s3): S3Proxy, or versitygw for Object Lock."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
S3_SCRIPT = REPO / "deploy" / "local" / "s3"
BUCKET = "audit-archive"


@dataclass
class LocalS3:
    """A server started by deploy/local/s3; tests may pause and resume it."""

    port: int
    state_dir: Path
    server: str = "s3proxy"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _run(self, command: str) -> str:
        flags = ["--server", self.server, "--port", str(self.port)]
        done = subprocess.run(
            [str(S3_SCRIPT), command, *flags, "--state-dir", str(self.state_dir)],
            check=True,
            timeout=300,  # versitygw is built on a first start (deploy/local/setup does it)
            capture_output=True,
            text=True,
        )
        return done.stdout

    def start(self) -> dict[str, str]:
        """Start it; the environment a client needs (credentials, archive URL, endpoint)."""
        lines = self._run("start").splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    def stop(self) -> None:
        self.resume()
        self._run("stop")

    def pause(self) -> None:
        """SIGSTOP the server: requests hang unanswered, as with a stalled upload."""
        os.kill(self._pid(), signal.SIGSTOP)

    def resume(self) -> None:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            os.kill(self._pid(), signal.SIGCONT)

    def _pid(self) -> int:
        return int((self.state_dir / "server.pid").read_text())
