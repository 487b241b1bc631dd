"""The image's lock file: every dependency pinned with hashes, at a version pyproject allows."""

from __future__ import annotations

import re
import tomllib

from dockerfile_parse import DockerfileParser
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.deploy.conftest import DEPLOY, REPO

LOCK = DEPLOY / "docker" / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")


def locked() -> dict[str, tuple[str, int]]:
    """Each pinned package: its version and how many hashes the lock gives for it."""
    pins: dict[str, tuple[str, int]] = {}
    name = ""
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name = canonicalize_name(match.group(1))
            pins[name] = (match.group(2), 0)
        elif line.strip().startswith("--hash=sha256:") and name:
            version, hashes = pins[name]
            pins[name] = (version, hashes + 1)
    return pins


def test_every_dependency_of_pyproject_is_locked_at_a_version_it_allows() -> None:
    pins = locked()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{name} is not in {LOCK.name}: run deploy/docker/lock"
        version, _ = pins[name]
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{name}=={version} does not satisfy {dependency}: run deploy/docker/lock"
        )


def test_every_pin_carries_hashes() -> None:
    pins = locked()
    assert pins
    assert all(hashes for _, hashes in pins.values()), {n: v for n, v in pins.items() if not v[1]}


def test_the_image_installs_from_the_lock_with_hashes_for_its_own_python() -> None:
    dockerfile = DockerfileParser(path=str(DEPLOY / "docker" / "Dockerfile"))
    runs = [i["value"] for i in dockerfile.structure if i["instruction"] == "RUN"]
    assert any("--require-hashes" in run and "requirements.lock" in run for run in runs)
    image_python = re.search(r"python:(3\.\d+)", dockerfile.baseimage)
    assert image_python
    assert f"--python-version {image_python.group(1)}" in (DEPLOY / "docker" / "lock").read_text()
