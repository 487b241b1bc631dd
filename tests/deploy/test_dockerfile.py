"""deploy/docker/Dockerfile, checked statically (no Docker engine runs where CI runs)."""

from __future__ import annotations

import json
import re
import tomllib
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser

from tests.deploy.conftest import DEPLOY, REPO, load_yaml_documents, render

DOCKER = DEPLOY / "docker"


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(path=str(DOCKER / "Dockerfile"))


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    instructions = [i for i in parser.structure if i["instruction"] != "COMMENT"]
    last_from = max(n for n, i in enumerate(instructions) if i["instruction"] == "FROM")
    return instructions[last_from:]


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == instruction]


def test_base_is_a_slim_python_the_project_supports(dockerfile: DockerfileParser) -> None:
    match = re.fullmatch(r"python:3\.(\d+)-slim(-\w+)?", dockerfile.baseimage)
    assert match, dockerfile.baseimage
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    minimum = re.fullmatch(r">=3\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum and int(match.group(1)) >= int(minimum.group(1))


def test_runs_as_the_non_root_user_the_manifests_expect(dockerfile: DockerfileParser) -> None:
    stage = final_stage(dockerfile)
    (user,) = values(stage, "USER")
    uid, _, gid = user.partition(":")
    # Numeric, so the kubelet can verify runAsNonRoot without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0 and (not gid or int(gid) != 0)
    for workload in render("."):
        if workload["kind"] in ("Deployment", "StatefulSet"):
            security = workload["spec"]["template"]["spec"]["securityContext"]
            assert security["runAsUser"] == int(uid), workload["metadata"]["name"]


def test_works_on_a_read_only_root_filesystem(dockerfile: DockerfileParser) -> None:
    stage = final_stage(dockerfile)
    assert dockerfile.envs.get("PYTHONDONTWRITEBYTECODE") == "1"
    (volumes,) = values(stage, "VOLUME")
    declared = set(json.loads(volumes))
    config = next(
        doc
        for doc in render(".")
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("audit-relay-config")
    )
    assert declared == {"/tmp", config["data"]["AUDIT_RELAY_SPOOL_DIR"]}


def test_installs_only_the_project_from_its_own_wheels(dockerfile: DockerfileParser) -> None:
    stage = final_stage(dockerfile)
    assert not values(stage, "ADD"), "ADD fetches or unpacks implicitly; use COPY"
    installs = [run for run in values(stage, "RUN") if "pip install" in run]
    assert installs and all("--no-index" in run for run in installs)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    (cmd,) = values(stage, "CMD")
    program = json.loads(cmd)[0]  # exec form: the program is PID 1 and receives SIGTERM
    assert program in pyproject["project"]["scripts"]


def test_build_context_holds_what_the_build_copies(dockerfile: DockerfileParser) -> None:
    ignore = (DOCKER / "Dockerfile.dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert "*" in ignore, "the context should be an allow-list"
    copied = set()
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "COPY" and "--from" not in instruction["value"]:
            copied.update(instruction["value"].split()[:-1])
    assert copied <= allowed, copied - allowed
    for source in copied:
        assert (REPO / source).exists(), source
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages | {"pyproject.toml", pyproject["project"]["readme"]} <= copied


def test_compose_tags_the_image_with_the_project_version() -> None:
    # The Kubernetes side is checked in test_manifests (test_images_carry_the_project_version).
    (compose,) = load_yaml_documents(DEPLOY / "compose" / "compose.yaml")
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert compose["x-audit-image"]["image"] == f"kube-audit-relay:{version}"
