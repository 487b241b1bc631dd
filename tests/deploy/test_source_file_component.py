"""components/source-file: audit-source file on each control-plane node, reading the host's
audit log read-only and keeping its checkpoint and spool on the host."""

from __future__ import annotations

from relay.sources import SOURCES
from relay.sources.settings import build_parser
from tests.deploy.conftest import render
from tests.deploy.rendered import SOURCE_BUILDS, container_environment, named


def test_the_daemonset_runs_on_control_plane_nodes_and_reads_the_log_read_only() -> None:
    (build,) = SOURCE_BUILDS
    objects = render(build)
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
