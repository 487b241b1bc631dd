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


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default only where there is one: "(default: None)" contradicts help such as
    "(required)" or "default: audit-<sink>"."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or isinstance(action.default, bool):
            return action.help
        return super()._get_help_string(action)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        # A description or epilog laid out in lines of its own (a table) is kept as written.
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


class EnvArgumentParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose options default to ``<PREFIX>_<FLAG>`` from ``environ``."""

    def __init__(self, *args: Any, env_prefix: str, environ: Mapping[str, str], **kwargs: Any):
        kwargs.setdefault("formatter_class", _DefaultsHelpFormatter)
        super().__init__(*args, **kwargs)
        self.env_prefix = env_prefix
        self.environ = environ
        # Repeatable options given in the environment, used only when the command line has none.
        self._appended_from_env: dict[str, list[str]] = {}

    def env_name(self, flag: str) -> str:
        return f"{self.env_prefix}_{flag.lstrip('-').replace('-', '_').upper()}"

    def add_option(self, flag: str, *, help: str, **kwargs: Any) -> argparse.Action:
        """Add ``flag`` with its environment variable named in its help text.

        ``action="store_true"`` flags accept 1/true/yes/on and 0/false/no/off in the environment.
        A value from the environment is checked against ``choices`` as one on the command line
        is (argparse checks only the ``type`` of a default).
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
            from_env = [item for item in (raw or "").split(";") if item]
            kwargs["default"] = None
            help += " (repeatable; in the environment separate values with ';')"
        elif raw is not None:
            choices = kwargs.get("choices")
            if choices is not None and raw not in choices:
                self.error(f"{name}={raw!r}: expected one of {', '.join(map(str, choices))}")
            kwargs["default"] = raw
        action = self.add_argument(flag, help=f"{help} [env {name}]", **kwargs)
        if kwargs.get("action") == "append":
            self._appended_from_env[action.dest] = from_env
        return action

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        for dest, from_env in self._appended_from_env.items():
            if getattr(parsed, dest, None) is None:
                setattr(parsed, dest, list(from_env))
        return parsed, extras


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
