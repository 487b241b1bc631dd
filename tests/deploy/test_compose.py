"""deploy/compose: the Docker Compose set-up parses and fits the image and the programs.

No Docker engine runs where CI runs, so the file is checked statically: structure, the image
it builds, KRaft settings, and that the relay and consumer settings are ones they accept.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import (
    DEPLOY,
    REPO,
    ProgramInterface,
    check_against_program,
    load_yaml_documents,
)

COMPOSE = DEPLOY / "compose"
RELAY_SHUTDOWN_GRACE_DEFAULT = 20.0


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    (document,) = load_yaml_documents(COMPOSE / "compose.yaml")
    return document


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)(s|m)", duration)
    assert match, duration
    return int(match.group(1)) * (60 if match.group(2) == "m" else 1)


def test_services_and_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert {"kafka", "relay", "consumer-csv", "send-sample"} <= set(services)
    for name in ("relay", "consumer-csv", "send-sample"):
        service = services[name]
        build = service["build"]
        assert (COMPOSE / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "docker" / "Dockerfile"
        )
        assert (COMPOSE / build["context"]).resolve() == REPO
        # The image must work as it runs on Kubernetes: read-only, /tmp writable.
        assert service["read_only"] is True, name
        assert "/tmp" in service["tmpfs"], name
        assert service["cap_drop"] == ["ALL"], name
    for service in services.values():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{port}: only on the loopback"


def test_kafka_is_kraft_from_the_official_image(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    local_version = re.search(
        r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([0-9.]+)\}"', (DEPLOY / "local" / "kafka").read_text()
    )
    assert local_version, "deploy/local/kafka no longer names its Kafka version"
    assert kafka["image"] == f"apache/kafka:{local_version.group(1)}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert not any("ZOOKEEPER" in name for name in env)
    advertised = dict(
        reversed(listener.split("://")) for listener in env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    )
    assert "kafka:9092" in advertised
    relay = compose["services"]["relay"]["environment"]
    consumer = compose["services"]["consumer-csv"]["environment"]
    assert relay["AUDIT_RELAY_KAFKA_BOOTSTRAP"] == consumer["AUDIT_CONSUMER_KAFKA_BOOTSTRAP"]
    assert relay["AUDIT_RELAY_KAFKA_BOOTSTRAP"] == "kafka:9092"
    assert relay["AUDIT_RELAY_TOPIC"] == consumer["AUDIT_CONSUMER_TOPIC"]


def test_settings_are_ones_the_programs_accept(
    compose: dict[str, Any],
    relay_interface: ProgramInterface,
    consumer_interface: ProgramInterface,
) -> None:
    programs = {
        "audit-relay": ("AUDIT_RELAY_", relay_interface),
        "audit-consumer": ("AUDIT_CONSUMER_", consumer_interface),
    }
    checked = 0
    for name, service in compose["services"].items():
        command = service.get("command", [])
        if command and command[0] in programs:
            prefix, program = programs[command[0]]
            env = {key: str(value) for key, value in service.get("environment", {}).items()}
            check_against_program(command, env, prefix, program, name)
            checked += 1
    assert checked == 2


def test_relay_gets_time_to_drain_and_a_spool_volume(compose: dict[str, Any]) -> None:
    relay = compose["services"]["relay"]
    env = relay["environment"]
    grace = float(env.get("AUDIT_RELAY_SHUTDOWN_GRACE", RELAY_SHUTDOWN_GRACE_DEFAULT))
    assert seconds(relay["stop_grace_period"]) > grace
    volume, _, target = relay["volumes"][0].partition(":")
    assert target == env["AUDIT_RELAY_SPOOL_DIR"]
    assert volume in compose["volumes"]
    assert relay["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_sample_sender_posts_a_valid_event_list(compose: dict[str, Any]) -> None:
    sender = compose["services"]["send-sample"]
    source, _, target = sender["volumes"][0].partition(":")
    target = target.removesuffix(":ro")
    script = sender["command"][-1]
    assert target in script
    relay_env = compose["services"]["relay"]["environment"]
    port = relay_env["AUDIT_RELAY_LISTEN"].rpartition(":")[2]
    assert f"http://relay:{port}/api/audits" in script
    body = json.loads((COMPOSE / Path(source)).read_text())
    assert (body["kind"], body["apiVersion"]) == ("EventList", "audit.k8s.io/v1")
    required = {"level", "auditID", "stage", "requestURI", "verb", "user", "stageTimestamp"}
    assert body["items"] and all(required <= set(item) for item in body["items"])
