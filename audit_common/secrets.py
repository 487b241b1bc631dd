"""Secrets read from files named by flags: never from a flag's value, never logged."""

from __future__ import annotations

from pathlib import Path

from audit_common.errors import ConfigError


def read_secret_file(path: str, flag: str) -> str:
    """The first line of a secret file, stripped. Raises ConfigError naming ``flag``."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{flag}: cannot read {path}: {exc}") from exc
    secret = text.splitlines()[0].strip() if text.strip() else ""
    if not secret:
        raise ConfigError(f"{flag}: {path} is empty")
    return secret
