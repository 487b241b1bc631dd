"""Command-line flags that fall back to environment variables, for both entry points.

Every flag ``--some-flag`` of a program with prefix ``AUDIT_RELAY`` can also be given as
``AUDIT_RELAY_SOME_FLAG``; a flag on the command line wins. The environment is passed in by
``__main__``: library code never reads ``os.environ``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class EnvArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options default to ``<PREFIX>_<FLAG>`` from ``environ``."""

    def __init__(self, *args: Any, env_prefix: str, environ: Mapping[str, str], **kwargs: Any):
        kwargs.setdefault("formatter_class", argparse.ArgumentDefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.env_prefix = env_prefix
        self.environ = environ

    def env_name(self, flag: str) -> str:
        return f"{self.env_prefix}_{flag.lstrip('-').replace('-', '_').upper()}"

    def add_option(self, flag: str, *, help: str, **kwargs: Any) -> argparse.Action:
        """Add ``flag`` with its environment variable named in its help text.

        ``action="store_true"`` flags accept 1/true/yes/on and 0/false/no/off in the environment.
        """
        name = self.env_name(flag)
        raw = self.environ.get(name)
        if kwargs.get("action") == "store_true":
            if raw is not None:
                lowered = raw.strip().lower()
                if lowered not in _TRUE | _FALSE:
                    self.error(f"{name}={raw!r}: expected one of 1/true/yes/on or 0/false/no/off")
                kwargs["default"] = lowered in _TRUE
        elif kwargs.get("action") == "append":
            if raw is not None:
                kwargs["default"] = [item for item in raw.split(";") if item]
            help += " (repeatable; in the environment separate values with ';')"
        elif raw is not None:
            kwargs["default"] = raw
        return self.add_argument(flag, help=f"{help} [env {name}]", **kwargs)


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number above 0."""
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be above 0, got {value}")
    return value


def host_port(text: str) -> tuple[str, int]:
    """argparse type: ``HOST:PORT`` (``[::1]:8080`` for IPv6)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]") or "0.0.0.0", int(port)
