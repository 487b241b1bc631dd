"""deploy/kubernetes, rendered with kustomize and checked offline.

Every object is validated against the Kubernetes OpenAPI schemas (kubernetes-validate, strict:
an unknown field fails); the custom resources it has no schema for (KEDA, Prometheus Operator,
Strimzi) are checked field by field here. Then what a schema cannot see: each consumer has
exactly one autoscaler, pods are hardened, references resolve, every variable and flag is one
the programs accept, and every metric an alert uses is one they export.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from yamllint import linter
from yamllint.config import YamlLintConfig

from tests.deploy.conftest import (
    DEPLOY,
    KUBERNETES,
    KUSTOMIZE_VERSION,
    REPO,
    Manifest,
    ProgramInterface,
    check_against_program,
    kustomize_version,
    load_yaml_documents,
    render,
)
from tests.deploy.rendered import (
    APPLIED,
    IMAGE,
    WORKLOAD_BUILDS,
    container_environment,
    describe,
    image_name,
    named,
    of_kind,
    our_containers,
    relay_parts,
    selects,
)

BUILDS = (*WORKLOAD_BUILDS, "strimzi")
# The oldest Kubernetes minor the manifests support, and a current one.
KUBERNETES_VERSIONS = ("1.31", "1.35")
PARTITIONS = 12


# --- custom resources: the fields their controllers require -----------------------------------


def check_scaled_object(obj: Manifest) -> None:
    spec = obj["spec"]
    allowed = {
        "scaleTargetRef",
        "pollingInterval",
        "cooldownPeriod",
        "initialCooldownPeriod",
        "idleReplicaCount",
        "minReplicaCount",
        "maxReplicaCount",
        "advanced",
        "fallback",
        "triggers",
    }
    assert set(spec) <= allowed, f"unknown ScaledObject fields {set(spec) - allowed}"
    assert isinstance(spec["scaleTargetRef"]["name"], str)
    assert 0 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert spec["triggers"], "a ScaledObject needs at least one trigger"
    for trigger in spec["triggers"]:
        assert isinstance(trigger["type"], str)
        # KEDA takes trigger metadata as a map of strings: a YAML number or boolean fails.
        assert all(isinstance(value, str) for value in trigger["metadata"].values()), trigger


def check_service_monitor(obj: Manifest) -> None:
    spec = obj["spec"]
    assert spec["selector"]["matchLabels"]
    for endpoint in spec["endpoints"]:
        assert isinstance(endpoint["port"], str)
        assert endpoint.get("scheme", "http") in ("http", "https")


def check_pod_monitor(obj: Manifest) -> None:
    spec = obj["spec"]
    assert spec["selector"]["matchLabels"]
    for endpoint in spec["podMetricsEndpoints"]:
        assert isinstance(endpoint["port"], str)


def check_prometheus_rule(obj: Manifest) -> None:
    for group in obj["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert rule["alert"] and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smh]", rule["for"])
            assert rule["labels"]["severity"] in ("critical", "warning", "info")
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def check_kafka_topic(obj: Manifest) -> None:
    assert obj["metadata"]["labels"]["strimzi.io/cluster"]
    spec = obj["spec"]
    assert set(spec) <= {"topicName", "partitions", "replicas", "config"}
    assert isinstance(spec["partitions"], int) and spec["partitions"] >= 1
    assert isinstance(spec["replicas"], int) and spec["replicas"] >= 1
    assert all(isinstance(value, str | int | bool) for value in spec.get("config", {}).values())


CUSTOM_RESOURCES: dict[tuple[str, str], Callable[[Manifest], None]] = {
    ("keda.sh/v1alpha1", "ScaledObject"): check_scaled_object,
    ("monitoring.coreos.com/v1", "ServiceMonitor"): check_service_monitor,
    ("monitoring.coreos.com/v1", "PodMonitor"): check_pod_monitor,
    ("monitoring.coreos.com/v1", "PrometheusRule"): check_prometheus_rule,
    ("kafka.strimzi.io/v1beta2", "KafkaTopic"): check_kafka_topic,
}


def validation_errors(obj: Manifest) -> list[str]:
    custom = CUSTOM_RESOURCES.get((obj["apiVersion"], obj["kind"]))
    if custom is not None:
        try:
            custom(obj)
        except (AssertionError, KeyError, TypeError) as exc:
            return [f"{describe(obj)}: {type(exc).__name__} {exc}"]
        return []
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(part) for part in exc.path)
            errors.append(f"{describe(obj)} on {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{describe(obj)} on {version}: {exc.message}")
    return errors


# --- the tests --------------------------------------------------------------------------------


def test_kustomize_is_the_version_setup_installs() -> None:
    assert kustomize_version() == KUSTOMIZE_VERSION


@pytest.mark.parametrize("build", BUILDS)
def test_every_rendered_object_is_valid(build: str) -> None:
    objects = render(build)
    assert objects, f"{build} renders nothing"
    errors = [error for obj in objects for error in validation_errors(obj)]
    assert not errors, "\n".join(errors)


def secret_templates() -> dict[str, Manifest]:
    return {
        doc["metadata"]["name"]: doc
        for path in sorted((KUBERNETES / "secrets").glob("*.yaml"))
        for doc in load_yaml_documents(path)
    }


def test_secret_templates_are_valid_and_in_the_namespace() -> None:
    templates = secret_templates()
    assert {"audit-relay-tls", "audit-relay-tokens"} <= set(templates)
    for secret in templates.values():
        assert secret["kind"] == "Secret"
        assert secret["metadata"]["namespace"] == "auditing"
        assert not validation_errors(secret), validation_errors(secret)
    assert set(templates["audit-relay-tls"]["stringData"]) == {"tls.crt", "tls.key", "ca.crt"}


def test_every_workload_lives_in_the_auditing_namespace() -> None:
    for build in APPLIED:
        for obj in render(build):
            if obj["kind"] != "Namespace":
                assert obj["metadata"].get("namespace") == "auditing", (build, describe(obj))


@pytest.mark.parametrize("build", APPLIED)
def test_each_consumer_has_exactly_one_autoscaler(build: str) -> None:
    objects = render(build)
    consumers = {
        obj["metadata"]["name"]: obj
        for obj in of_kind(objects, "Deployment")
        if obj["metadata"]["labels"].get("app.kubernetes.io/component") == "consumer"
    }
    assert {"audit-consumer-csv", "audit-consumer-jsonl"} <= set(consumers)
    scaled = {
        obj["spec"]["scaleTargetRef"]["name"]: obj for obj in of_kind(objects, "ScaledObject")
    }
    hpas = {
        obj["spec"]["scaleTargetRef"]["name"]: obj
        for obj in of_kind(objects, "HorizontalPodAutoscaler")
    }
    assert not set(scaled) & set(hpas), "KEDA and an HPA would fight over the same Deployment"
    assert set(scaled) | set(hpas) == set(consumers)
    _, _, relay_env = relay_parts(objects)
    assert int(relay_env["AUDIT_RELAY_PARTITIONS"]) == PARTITIONS
    for name, deployment in consumers.items():
        assert "replicas" not in deployment["spec"], f"{name}: the autoscaler owns replicas"
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env = container_environment(container, objects)
        if name in scaled:
            spec = scaled[name]["spec"]
            assert (spec["minReplicaCount"], spec["maxReplicaCount"]) == (1, PARTITIONS)
            (trigger,) = spec["triggers"]
            assert trigger["type"] == "kafka"
            metadata = trigger["metadata"]
            for parameter in ("bootstrapServers", "consumerGroup", "topic"):
                assert metadata[f"{parameter}FromEnv"] in env, (name, parameter)
            assert env["AUDIT_CONSUMER_TOPIC"] == relay_env["AUDIT_RELAY_TOPIC"]
            assert env["AUDIT_CONSUMER_KAFKA_BOOTSTRAP"] == relay_env["AUDIT_RELAY_KAFKA_BOOTSTRAP"]
        else:
            spec = hpas[name]["spec"]
            assert (spec["minReplicas"], spec["maxReplicas"]) == (1, PARTITIONS)
        assert env["AUDIT_CONSUMER_GROUP"] == f"audit-{name.removeprefix('audit-consumer-')}"


@pytest.mark.parametrize("build", WORKLOAD_BUILDS)
def test_pods_are_hardened_and_bounded(build: str) -> None:
    objects = render(build)
    checked = 0
    for workload, container in our_containers(objects):
        pod = workload["spec"]["template"]["spec"]
        where = describe(workload)
        assert pod["automountServiceAccountToken"] is False, where
        if container["command"][:2] == ["audit-source", "file"]:
            # The apiserver's audit log is root's, mode 0600: root reads it, with every
            # capability dropped (below) and only that directory mounted, read-only.
            assert pod["securityContext"]["runAsUser"] == 0, where
            assert "add" not in container["securityContext"]["capabilities"], where
            (log_mount,) = (m for m in container["volumeMounts"] if m["name"] == "audit-log")
            assert log_mount["readOnly"] is True, where
        else:
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        for bound in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][bound]), (where, bound)
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", where
        assert "readinessProbe" in container, where
        mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]], f"{where}: no writable /tmp"
        assert pod["terminationGracePeriodSeconds"] >= 30, where
        checked += 1
    assert checked >= 3


@pytest.mark.parametrize("build", APPLIED)
def test_relay_statefulset_fits_the_relay(build: str) -> None:
    objects = render(build)
    statefulset, container, env = relay_parts(objects)
    pod = statefulset["spec"]["template"]["spec"]
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"].get("replicas", 1) >= 2

    port = int(env["AUDIT_RELAY_LISTEN"].rpartition(":")[2])
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container["livenessProbe"]["httpGet"]["port"] == container_port["name"]

    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    templates = secret_templates()
    files = ("TLS_CERT", "TLS_KEY", "TOKEN_FILE", "REDACT_HMAC_KEY_FILE")
    for variable in (f"AUDIT_RELAY_{name}" for name in files):
        directory, _, key = env[variable].rpartition("/")
        secret_name = volumes[mounts[directory]]["secret"]["secretName"]
        assert key in templates[secret_name]["stringData"], (variable, secret_name)

    service = named(objects, "Service", "audit-relay")
    assert selects(service["spec"]["selector"], labels)
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [container_port["name"]]
    pdb = named(objects, "PodDisruptionBudget", "audit-relay")
    assert selects(pdb["spec"]["selector"]["matchLabels"], labels)
    assert pdb["spec"]["minAvailable"] < statefulset["spec"]["replicas"]
    policy = named(objects, "NetworkPolicy", "audit-relay")
    assert selects(policy["spec"]["podSelector"]["matchLabels"], labels)
    for rule in policy["spec"]["ingress"]:
        assert [p["port"] for p in rule["ports"]] == [container_port["name"]]


@pytest.mark.parametrize("build", WORKLOAD_BUILDS)
def test_config_and_secret_references_resolve(build: str) -> None:
    objects = render(build)
    templates = secret_templates()
    for workload, container in our_containers(objects):
        where = describe(workload)
        container_environment(container, objects)  # every ConfigMap name and key exists
        for variable in container.get("env", []):
            ref = variable.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in templates[ref["name"]]["stringData"], (where, ref)
        for volume in workload["spec"]["template"]["spec"].get("volumes", []):
            if "secret" in volume:
                keys = templates[volume["secret"]["secretName"]]["stringData"]
                for item in volume["secret"].get("items", []):
                    assert item["key"] in keys, (where, item)


@pytest.mark.parametrize("build", WORKLOAD_BUILDS)
def test_variables_and_flags_are_ones_the_programs_accept(
    build: str,
    relay_interface: ProgramInterface,
    consumer_interface: ProgramInterface,
    source_interface: ProgramInterface,
) -> None:
    objects = render(build)
    programs = {
        "audit-relay": ("AUDIT_RELAY_", relay_interface),
        "audit-consumer": ("AUDIT_CONSUMER_", consumer_interface),
        "audit-source": ("AUDIT_RELAY_", source_interface),
    }
    for workload, container in our_containers(objects):
        command = container["command"] + container.get("args", [])
        prefix, program = programs[command[0]]
        env = container_environment(container, objects)
        check_against_program(command, env, prefix, program, describe(workload))


@pytest.mark.parametrize("build", WORKLOAD_BUILDS)
def test_images_carry_the_project_version(build: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    tags = {container["image"].rpartition(":")[2] for _, container in our_containers(render(build))}
    assert tags == {project["version"]}


def exported_metrics() -> set[str]:
    """Every sample name the relay and the consumers expose, labelled series included."""
    from prometheus_client import CollectorRegistry

    from consumers.archive.store import StoreSettings
    from consumers.metrics import ConsumerMetrics
    from consumers.sinks.archive import ArchiveSettings, ArchiveSink
    from relay.metrics import RelayMetrics
    from relay.sources.metrics import SourceMetrics

    suffixes = {
        "counter": ("_total",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count"),
        "summary": ("", "_sum", "_count"),
    }
    names: set[str] = set()
    # The archive sink's own metrics (lag, objects), which its alert and panels read.
    archive = CollectorRegistry()
    ArchiveSink(ArchiveSettings(StoreSettings("file:///archive"))).register_metrics(archive)
    sources = CollectorRegistry()
    SourceMetrics(sources)
    for registry in (RelayMetrics().registry, ConsumerMetrics().registry, archive, sources):
        for family in registry.collect():
            names.update(family.name + suffix for suffix in suffixes[family.type])
    return names


def test_alerts_and_scrapes_match_what_the_programs_export() -> None:
    objects = render("overlays/production")
    exported = exported_metrics()
    (rules,) = of_kind(objects, "PrometheusRule")
    used: set[str] = set()
    for group in rules["spec"]["groups"]:
        for rule in group["rules"]:
            text = rule["expr"] + " ".join(rule["annotations"].values())
            used.update(re.findall(r"\b(?:relay|audit_consumer|audit_source)_[a-z0-9_]+\b", text))
    assert used, "no alert uses the programs' metrics"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
    alerts = {rule["alert"] for group in rules["spec"]["groups"] for rule in group["rules"]}
    wanted = ("ServerErrors", "SpoolGrowing", "NotDelivering", "LagRising", "DeadLettering")
    assert all(any(alert.endswith(w) for alert in alerts) for w in wanted), alerts

    service = named(objects, "Service", "audit-relay")
    (monitor,) = of_kind(objects, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= {
        p["name"] for p in service["spec"]["ports"]
    }
    pod_monitor = named(objects, "PodMonitor", "audit-consumer")
    for workload, container in our_containers(objects):
        if container["command"][0] == "audit-consumer":
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert selects(pod_monitor["spec"]["selector"]["matchLabels"], labels)
            ports = {p["name"] for p in container["ports"]}
            assert {e["port"] for e in pod_monitor["spec"]["podMetricsEndpoints"]} <= ports


def yaml_files() -> list[Path]:
    return sorted(path for pattern in ("*.yaml", "*.yml") for path in DEPLOY.rglob(pattern))


def test_all_deploy_yaml_passes_yamllint() -> None:
    config = YamlLintConfig(file=str(Path(__file__).with_name("yamllint.yaml")))
    files = yaml_files()
    assert len(files) >= 20
    problems: list[Any] = []
    for path in files:
        problems.extend(
            f"{path.relative_to(REPO)}:{problem.line}:{problem.column}: {problem.message}"
            for problem in linter.run(path.read_text(), config, str(path))
        )
    assert not problems, "\n".join(problems)


def test_smoke_test_job_posts_as_the_apiserver_would() -> None:
    objects = render("overlays/quickstart")
    job = named(objects, "Job", "audit-smoke-test")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert image_name(container["image"]).endswith(IMAGE)
    policy = named(objects, "NetworkPolicy", "audit-relay")
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert any(
        "podSelector" in source and selects(source["podSelector"]["matchLabels"], labels)
        for rule in policy["spec"]["ingress"]
        for source in rule["from"]
    )
    service = named(objects, "Service", "audit-relay")
    (port,) = service["spec"]["ports"]
    _, _, env = relay_parts(objects)
    url = f"https://audit-relay.auditing.svc:{port['port']}{env['AUDIT_RELAY_PATH']}?"
    assert url in container["command"][-1]
    templates = secret_templates()
    for volume in pod["volumes"]:
        if "secret" in volume:
            keys = templates[volume["secret"]["secretName"]]["stringData"]
            assert all(item["key"] in keys for item in volume["secret"].get("items", []))
