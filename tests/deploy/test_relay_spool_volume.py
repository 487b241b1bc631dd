"""The relay's spool on Kubernetes: a claim per replica that holds every worker's spool, kept
when the StatefulSet shrinks or is deleted, and a pod that stops before the kubelet kills it.

The bounds are computed from the rendered manifests and read as the relay reads them (its own
parser over the container's command and environment), so changing a flag, a variable or the
claim alone fails here.
"""

from __future__ import annotations

import math

import pytest

from relay.spool.store import DEFAULT_SEGMENT_BYTES
from tests.deploy.conftest import Manifest, render
from tests.deploy.quantities import quantity_bytes
from tests.deploy.rendered import (
    APPLIED,
    of_kind,
    relay_arguments,
    relay_parts,
    selects,
)

# What a stop allows the producer past --ack-timeout to close (relay --help, --shutdown-grace).
PRODUCER_CLOSE_MARGIN_S = 5.0
# What the file system keeps for itself, measured with mke2fs 1.47 defaults (4 KiB blocks): a
# non-root writer gets 90.0% of a 2 GiB ext4 volume and 91.1% of a 3 GiB one (5% reserved for
# root, inode tables 1.6%, a 64 MiB journal). XFS keeps less.
FILESYSTEM_SHARE = 0.10


def spool_volume_bound(workers: int, spool_max_bytes: int) -> int:
    """The smallest claim that holds every worker's full spool.

    Each worker's spool counts every byte of its segments, the sealed one being replayed and
    its already acknowledged head included, until the segment is deleted: it never holds more
    than ``spool_max_bytes``. On top, per worker, one segment: the blocks the file system
    allocates ahead of the open segment's size and the last block of each segment file.
    """
    return math.ceil(workers * (spool_max_bytes + DEFAULT_SEGMENT_BYTES) / (1 - FILESYSTEM_SHARE))


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("2Gi", 2 << 30),
        ("2G", 2_000_000_000),
        ("1500Mi", 1500 << 20),
        ("1.5Gi", 3 << 29),
        ("3e9", 3_000_000_000),
        ("512k", 512_000),
        ("+1Ki", 1024),
        ("100m", 1),  # a tenth of a byte: Kubernetes rounds storage up
        (4096, 4096),
    ],
)
def test_quantities_are_read_as_kubernetes_reads_them(quantity: str | int, expected: int) -> None:
    assert quantity_bytes(quantity) == expected


@pytest.mark.parametrize("text", ["2GiB", "2 Gi", "Gi", "", "2g", "1e"])
def test_what_is_not_a_quantity_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        quantity_bytes(text)


def test_the_bound_covers_two_workers_of_the_default_spool() -> None:
    # 2 x (1024 + 8) MiB / 0.9: what the base's 3Gi claim is checked against.
    assert spool_volume_bound(2, 1 << 30) == math.ceil(2 * 1032 * (1 << 20) / 0.9)
    assert spool_volume_bound(2, 1 << 30) < quantity_bytes("3Gi")


def claim_template(statefulset: Manifest, name: str) -> Manifest:
    templates: dict[str, Manifest] = {
        t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]
    }
    assert name in templates, f"volume {name} is not from a volumeClaimTemplate"
    return templates[name]


@pytest.mark.parametrize("build", APPLIED)
def test_the_spool_is_a_claim_per_replica_that_holds_every_worker(build: str) -> None:
    statefulset, container, env = relay_parts(render(build))
    args = relay_arguments(container, env)
    assert args.spool_dir, "the relay runs without a spool"
    mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
    volume = mounts[args.spool_dir]
    pod_volumes = {v["name"] for v in statefulset["spec"]["template"]["spec"]["volumes"]}
    # A pod volume of the same name would shadow the claim (an emptyDir dies with the pod).
    assert volume not in pod_volumes
    claim = claim_template(statefulset, volume)["spec"]
    assert claim["accessModes"] == ["ReadWriteOnce"]
    requested = quantity_bytes(claim["resources"]["requests"]["storage"])
    bound = spool_volume_bound(args.workers, args.spool_max_bytes)
    assert requested >= bound, (
        f"{build}: a claim of {requested} bytes is under {args.workers} workers x "
        f"({args.spool_max_bytes} + {DEFAULT_SEGMENT_BYTES}) / {1 - FILESYSTEM_SHARE} = {bound}"
    )


@pytest.mark.parametrize("build", APPLIED)
def test_claims_outlive_scale_down_and_deletion_and_replicas_are_independent(build: str) -> None:
    objects = render(build)
    statefulset, _, _ = relay_parts(objects)
    spec = statefulset["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"]["type"] == "RollingUpdate"
    labels = spec["template"]["metadata"]["labels"]
    (governing,) = [
        s for s in of_kind(objects, "Service") if s["metadata"]["name"] == spec["serviceName"]
    ]
    assert governing["spec"]["clusterIP"] == "None"
    assert selects(governing["spec"]["selector"], labels)
    # Scaling is an operator's decision (a removed replica's claim keeps its spool): no autoscaler.
    targets = [
        obj["spec"]["scaleTargetRef"]["name"]
        for kind in ("HorizontalPodAutoscaler", "ScaledObject")
        for obj in of_kind(objects, kind)
    ]
    assert statefulset["metadata"]["name"] not in targets


@pytest.mark.parametrize("build", APPLIED)
def test_the_relay_stops_before_the_kubelet_kills_it(build: str) -> None:
    statefulset, container, env = relay_parts(render(build))
    args = relay_arguments(container, env)
    pod = statefulset["spec"]["template"]["spec"]
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # SIGTERM comes after the preStop pause; the relay then lets requests finish for
    # --shutdown-grace and gives the producer --ack-timeout + 5 s to deliver and close.
    bound = float(pre_stop[1]) + args.shutdown_grace + args.ack_timeout + PRODUCER_CLOSE_MARGIN_S
    assert pod["terminationGracePeriodSeconds"] > bound


@pytest.mark.parametrize("build", APPLIED)
def test_the_non_root_relay_can_write_its_volume(build: str) -> None:
    statefulset, container, _ = relay_parts(render(build))
    security = statefulset["spec"]["template"]["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["fsGroup"] == security["runAsGroup"]
    assert "runAsGroup" not in container.get("securityContext", {})


@pytest.mark.parametrize("build", [b for b in APPLIED if "monitoring" in b or "production" in b])
def test_each_relay_pod_is_scraped_once(build: str) -> None:
    objects = render(build)
    statefulset, _, _ = relay_parts(objects)
    labels = statefulset["spec"]["template"]["metadata"]["labels"]
    (monitor,) = of_kind(objects, "ServiceMonitor")
    scraped = [
        service
        for service in of_kind(objects, "Service")
        if selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    ]
    assert [service["metadata"]["name"] for service in scraped] == ["audit-relay"]
    assert selects(scraped[0]["spec"]["selector"], labels)
    for pod_monitor in of_kind(objects, "PodMonitor"):
        assert not selects(pod_monitor["spec"]["selector"]["matchLabels"], labels)
