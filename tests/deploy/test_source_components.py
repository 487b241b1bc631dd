"""The sources' components: components/source-file (audit-source file on each control-plane
node, the host's audit log read-only, checkpoint and spool on the host) and
components/source-cloudwatch (one reader of an EKS cluster's log group),
components/source-eventhubs (replicas of one consumer group of an AKS cluster's Event Hub) and
components/source-pubsub (readers sharing a GKE log sink's subscription)."""

from __future__ import annotations

import argparse

from relay.sources import SOURCES
from relay.sources.settings import build_parser
from tests.deploy.conftest import Manifest, render
from tests.deploy.rendered import container_environment, named, of_kind, selects


def test_the_daemonset_runs_on_control_plane_nodes_and_reads_the_log_read_only() -> None:
    objects = render("base+source-file+keda")
    daemonset = named(objects, "DaemonSet", "audit-source-file")
    pod = daemonset["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    tolerated = {(t["key"], t["effect"]) for t in pod["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "NoSchedule") in tolerated
    (container,) = pod["containers"]
    env = container_environment(container, objects)
    args = build_parser(SOURCES, env).parse_args(container["command"][1:])
    assert args.kind == "file"
    volumes = {volume["name"]: volume for volume in pod["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}

    def host_path_of(path: str) -> tuple[str, bool]:
        """The host directory a container path lies on, and whether it is mounted read-only."""
        for mount_path, mount in mounts.items():
            if path.startswith(mount_path + "/"):
                host = volumes[mount["name"]]["hostPath"]["path"]
                return host + path.removeprefix(mount_path), mount.get("readOnly", False)
        raise AssertionError(f"{path} is on no hostPath volume")

    assert host_path_of(args.path) == ("/var/log/kubernetes/audit/audit.log", True)
    for state in (args.checkpoint_dir, args.spool_dir):
        host, read_only = host_path_of(state)
        assert host.startswith("/var/lib/kube-audit-source/") and not read_only
    port = args.listen[1]
    (container_port,) = container["ports"]
    assert container_port["containerPort"] == port
    assert container["readinessProbe"]["httpGet"]["port"] == container_port["name"]
    assert args.topic == env["AUDIT_RELAY_TOPIC"]
    # A new pod resumes at the checkpoint; a first one begins at the log's end, never re-imports.
    assert "--from-start" not in container["command"]


def test_the_cloudwatch_source_is_one_reader_with_its_own_identity_and_volume() -> None:
    objects = render("base+source-cloudwatch+keda")
    statefulset = named(objects, "StatefulSet", "audit-source-cloudwatch")
    assert statefulset["spec"]["replicas"] == 1  # two readers would deliver everything twice
    pod = statefulset["spec"]["template"]["spec"]
    named(objects, "ServiceAccount", pod["serviceAccountName"])
    (container,) = pod["containers"]
    env = container_environment(container, objects)
    args = build_parser(SOURCES, env).parse_args(container["command"][1:])
    assert args.kind == "cloudwatch" and args.eks_cluster
    assert_state_on_its_volume(statefulset, container, args)
    assert args.listen[1] == container["ports"][0]["containerPort"]


def test_the_eventhubs_source_reads_its_connection_string_from_a_secret_in_one_group() -> None:
    objects = render("base+source-eventhubs+keda")
    statefulset = named(objects, "StatefulSet", "audit-source-eventhubs")
    # Replicas split the hub's partitions in one consumer group: more than one is fine.
    assert statefulset["spec"]["replicas"] > 1
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = container_environment(container, objects)
    args = build_parser(SOURCES, env).parse_args(container["command"][1:])
    assert args.kind == "eventhubs" and args.consumer_group == "$Default"
    directory, _, key = args.connection_string_file.rpartition("/")
    (mount,) = (m for m in container["volumeMounts"] if m["mountPath"] == directory)
    assert mount["readOnly"]
    (volume,) = (v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == "audit-source-eventhubs"
    assert [item["path"] for item in volume["secret"]["items"]] == [key]
    assert_state_on_its_volume(statefulset, container, args)
    # A new group begins at the hub's end; the offsets it commits say where to resume.
    assert "--from-start" not in container["command"]


def test_the_pubsub_source_replicas_share_the_subscription_each_with_its_volume() -> None:
    objects = render("base+source-pubsub+keda")
    statefulset = named(objects, "StatefulSet", "audit-source-pubsub")
    assert statefulset["spec"]["replicas"] >= 2  # Pub/Sub hands each message to one reader
    pod = statefulset["spec"]["template"]["spec"]
    account = named(objects, "ServiceAccount", pod["serviceAccountName"])
    assert account["automountServiceAccountToken"] is False
    (container,) = pod["containers"]
    env = container_environment(container, objects)
    args = build_parser(SOURCES, env).parse_args(container["command"][1:])
    assert args.kind == "pubsub" and args.subscription.startswith("projects/")
    assert args.pubsub_endpoint is None  # Google's endpoint, with workload identity
    assert_state_on_its_volume(statefulset, container, args)
    assert args.listen[1] == container["ports"][0]["containerPort"]


def assert_state_on_its_volume(
    statefulset: Manifest, container: Manifest, args: argparse.Namespace
) -> None:
    """Checkpoint and spool on the replica's own claim: they outlive the pod."""
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    (state,) = (m for m in container["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    for directory in (args.checkpoint_dir, args.spool_dir):
        assert directory.startswith(state["mountPath"] + "/")


def test_the_sources_are_scraped_by_their_own_pod_monitor() -> None:
    objects = render(
        "base+source-file+source-cloudwatch+source-eventhubs+source-pubsub+monitoring+hpa"
    )
    monitor = named(objects, "PodMonitor", "audit-source")
    workloads = [
        named(objects, "DaemonSet", "audit-source-file"),
        named(objects, "StatefulSet", "audit-source-cloudwatch"),
        named(objects, "StatefulSet", "audit-source-eventhubs"),
        named(objects, "StatefulSet", "audit-source-pubsub"),
    ]
    for workload in workloads:
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for pod_monitor in of_kind(objects, "PodMonitor"):
            scraped = selects(pod_monitor["spec"]["selector"]["matchLabels"], labels)
            assert scraped == (pod_monitor is monitor), pod_monitor["metadata"]["name"]
        (container,) = workload["spec"]["template"]["spec"]["containers"]
        ports = {port["name"] for port in container["ports"]}
        assert {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]} <= ports
