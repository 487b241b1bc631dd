"""Which kustomize builds the deployment checks render, and how they read the rendered objects."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from relay.settings import build_parser
from tests.deploy.conftest import Manifest

# Every optional sink, with each autoscaler: what an operator may combine.
COMBINATIONS = tuple(
    "+".join(["base", *sinks, "monitoring", scaler])
    for scaler in ("keda", "hpa")
    for sinks in (
        (),
        ("sink-postgres",),
        ("sink-http",),
        ("sink-postgres", "sink-http", "sink-alerts", "sink-archive"),
    )
)
# The sources for clusters without a webhook, with the parts every installation has.
SOURCE_BUILDS = (
    "base+source-file+keda",
    "base+source-cloudwatch+keda",
    "base+source-eventhubs+keda",
    "base+source-pubsub+keda",
    "base+source-file+source-cloudwatch+source-eventhubs+source-pubsub+monitoring+hpa",
)
# The builds meant for `kubectl apply -k`: each has chosen KEDA or the HPA.
APPLIED = (".", "overlays/quickstart", "overlays/production", *COMBINATIONS, *SOURCE_BUILDS)
WORKLOAD_BUILDS = ("base", *APPLIED)
IMAGE = "kube-audit-relay"


def of_kind(objects: tuple[Manifest, ...], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def named(objects: tuple[Manifest, ...], kind: str, name: str) -> Manifest:
    matches = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def describe(obj: Manifest) -> str:
    return f"{obj['kind']}/{obj['metadata'].get('name')}"


def our_containers(objects: tuple[Manifest, ...]) -> Iterator[tuple[Manifest, Manifest]]:
    """(workload, container) for every container running the project's image."""
    for obj in objects:
        if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet"):
            for container in obj["spec"]["template"]["spec"]["containers"]:
                if image_name(container["image"]).endswith(IMAGE):
                    yield obj, container


def image_name(image: str) -> str:
    return image.rsplit(":", 1)[0] if ":" in image.rsplit("/", 1)[-1] else image


def container_environment(container: Manifest, objects: tuple[Manifest, ...]) -> dict[str, str]:
    """Variable name -> literal value, or "<ref>" for values from ConfigMap/Secret keys."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        config_map = named(objects, "ConfigMap", source["configMapRef"]["name"])
        env.update(config_map.get("data", {}))
    for variable in container.get("env", []):
        value_from = variable.get("valueFrom", {})
        if "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            env[variable["name"]] = named(objects, "ConfigMap", ref["name"])["data"][ref["key"]]
        else:
            env[variable["name"]] = variable.get("value", "<ref>")
    return env


def relay_parts(objects: tuple[Manifest, ...]) -> tuple[Manifest, Manifest, dict[str, str]]:
    """The relay's StatefulSet, its container, and the container's environment."""
    statefulset = named(objects, "StatefulSet", "audit-relay")
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    return statefulset, container, container_environment(container, objects)


def relay_arguments(container: Manifest, env: dict[str, str]) -> argparse.Namespace:
    """The relay container's settings as the relay's own parser reads its command and
    environment: flags first, then ``AUDIT_RELAY_*`` variables, then the relay's defaults."""
    argv = [*container["command"][1:], *container.get("args", [])]
    return build_parser(env).parse_args(argv)


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())
