"""Shared by the deployment checks: paths, kustomize rendering, what the programs accept."""

from __future__ import annotations

import functools
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# deploy/local/setup --for-tests builds this version into this directory.
KUSTOMIZE_VERSION = "v5.7.1"
KUSTOMIZE_CACHE = Path.home() / ".cache" / "kube-audit-relay" / "bin" / "kustomize"

Manifest = dict[str, Any]


def load_yaml_documents(path: Path) -> list[Manifest]:
    """Every non-empty document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def kustomize() -> str:
    """The kustomize binary: $KUSTOMIZE, the one deploy/local/setup built, or one on PATH."""
    for candidate in (os.environ.get("KUSTOMIZE"), str(KUSTOMIZE_CACHE), shutil.which("kustomize")):
        if candidate and Path(candidate).is_file():
            return candidate
    pytest.fail(
        f"kustomize not found: run deploy/local/setup --for-tests (it builds {KUSTOMIZE_CACHE})"
    )


@functools.cache
def render(build: str) -> tuple[Manifest, ...]:
    """``kustomize build`` of a directory under deploy/kubernetes, parsed; cached per build.

    A build written ``base+a+b`` is the base with components ``a`` and ``b`` (in that order),
    assembled in a scratch directory: how an operator combines the optional parts.
    """
    with tempfile.TemporaryDirectory() as scratch:
        if "+" in build:
            base, *components = build.split("+")
            directory = Path(scratch)
            kustomization = {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "namespace": "auditing",
                "resources": [os.path.relpath(KUBERNETES / base, directory)],
                "components": [
                    os.path.relpath(KUBERNETES / "components" / name, directory)
                    for name in components
                ],
            }
            (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
        else:
            directory = KUBERNETES / build
        result = subprocess.run(
            [kustomize(), "build", str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    if result.returncode != 0:
        pytest.fail(f"kustomize build {build} failed:\n{result.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


@dataclass(frozen=True)
class ProgramInterface:
    """The flags and environment variables one program's --help documents."""

    flags: frozenset[str]
    env_names: frozenset[str]
    choices: dict[str, frozenset[str]]


def _interface(module: str) -> ProgramInterface:
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, f"python -m {module} --help failed:\n{result.stderr}"
    text = result.stdout
    choices = {
        flag: frozenset(values.split(","))
        for flag, values in re.findall(r"(--[a-z][a-z0-9-]*) \{([^}]*)\}", text)
    }
    return ProgramInterface(
        flags=frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)),
        env_names=frozenset(re.findall(r"\[env\s+([A-Z][A-Z0-9_]*)\]", text)),
        choices=choices,
    )


@pytest.fixture(scope="session")
def relay_interface() -> ProgramInterface:
    return _interface("relay")


@pytest.fixture(scope="session")
def consumer_interface() -> ProgramInterface:
    return _interface("consumers")


@pytest.fixture(scope="session")
def source_interface() -> ProgramInterface:
    return _interface("relay.sources.cli")


def argv_flags(argv: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in argv if arg.startswith("--")}


def check_against_program(
    command: list[str], env: dict[str, str], prefix: str, program: ProgramInterface, where: str
) -> None:
    unknown_env = {name for name in env if name.startswith(prefix)} - program.env_names
    assert not unknown_env, f"{where}: {sorted(unknown_env)} unknown to {command[0]}"
    unknown_flags = argv_flags(command) - program.flags
    assert not unknown_flags, f"{where}: {sorted(unknown_flags)} unknown to {command[0]}"
    for flag, value in itertools.pairwise(command):
        if flag in program.choices:
            assert value in program.choices[flag], f"{where}: {flag} {value}"


def kustomize_version() -> str:
    return subprocess.run(
        [kustomize(), "version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.strip()
