"""The k8saudit fields that read a pod in the request object: its containers, init containers
and ephemeral containers, its volumes, its security context and host namespaces.

Their semantics follow the plugin's extractor (pkg/k8saudit/extract.go): a per-container field
walks ``requestObject.spec.<containers>`` and gives one value per container that has the
value, rendered as text, with no default filled in (``privileged`` is absent, not "false", for a
container without a securityContext); an index argument keeps only that container (``<NA>``
when there is no such container). Where the plugin's code and its documentation part ways, the
comment at the field says which one is followed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from consumers.rules.fields_base import (
    MISSING,
    Arg,
    Build,
    Extract,
    FieldDef,
    Value,
    along,
    index_of,
    indexed,
    listed,
    lookup,
    plain,
    scalar,
    spread,
    text,
)

_SPEC = ("requestObject", "spec")
_VOLUMES = (*_SPEC, "volumes")
_POD = "When the request object refers to a pod,"
_PRIVILEGED = (*_SPEC, "containers", "securityContext", "privileged")
_HOST_PATHS = (*_VOLUMES, "hostPath", "path")
_EACH_VOLUME = (*_VOLUMES, "")


def _images(containers: str, index: int | None, repository: bool) -> Extract:
    path = (*_SPEC, containers, "image")

    def extract(event: Mapping[str, Any]) -> list[Value]:
        if "auditID" not in event:
            return []
        values = spread(event, path, index)
        # The plugin fails the whole field when a container has no image.
        if values is None or any(value is MISSING for value in values):
            return []
        images = [text(value) for value in values]
        if not repository:
            return list(images)
        # The plugin's repository is the image up to its first ":" and then its first "@", so a
        # registry with a port ("host:5000/app:1") gives "host"; kept as the plugin answers.
        return [image.split(":", 1)[0].split("@", 1)[0] for image in images]

    return extract


def _image_field(containers: str, *, repository: bool) -> Build:
    return lambda arg: _images(containers, index_of(arg), repository)


def _host_ports(containers: str) -> Build:
    path = (*_SPEC, containers, "ports")

    def build(arg: Arg) -> Extract:
        index = index_of(arg)

        def extract(event: Mapping[str, Any]) -> list[Value]:
            if "auditID" not in event:
                return []
            found = spread(event, path, index)
            if found is None:
                return []
            ports: list[Value] = []
            for listing in found:
                if listing is MISSING:
                    continue
                if not isinstance(listing, list):
                    return []  # the plugin: wrong type, no value
                for port in listing:
                    if not isinstance(port, dict):
                        continue
                    # A port without hostPort reports its containerPort: with hostNetwork the
                    # two are the same port on the node.
                    value = port.get("hostPort", MISSING)
                    if value is MISSING:
                        value = port.get("containerPort", MISSING)
                    if value is not MISSING:
                        ports.append(text(value))
            return ports

        return extract

    return build


def _effective(containers: str, key: str) -> Build:
    # Documented (and done so by Falco's pre-plugin engine): each container's own
    # securityContext value, else the pod's securityContext value, else 0. The plugin version read
    # for this work looks both up one level too high (spec.<key>, containers[].<key>, never set
    # by Kubernetes), so it answers 0 for every container; the documented meaning is followed.
    pod_path = (*_SPEC, "securityContext", key)
    path = (*_SPEC, containers, "securityContext", key)
    each = (*_SPEC, containers, "")

    def build(arg: Arg) -> Extract:
        index = index_of(arg)

        def extract(event: Mapping[str, Any]) -> list[Value]:
            if "auditID" not in event:
                return []
            found = spread(event, path, index)
            if found is None:
                # No container has a securityContext.<key>: every container gets the default.
                containers_found = spread(event, each, index)
                if containers_found is None:
                    return []
                found = [MISSING] * len(containers_found)
            pod_value = lookup(event, pod_path)
            default = "0" if pod_value is MISSING else text(pod_value)
            return [default if value is MISSING else text(value) for value in found]

        return extract

    return build


def _any_privileged(event: Mapping[str, Any]) -> list[Value]:
    if "auditID" not in event:
        return []
    found = spread(event, _PRIVILEGED, None)
    if found is None:
        return []
    return ["true" if any(value is True for value in found) else "false"]


def _hostpath_used(arg: Arg) -> Extract:
    # Deprecated field: "true" when a hostPath volume's path is the argument, or starts with it
    # when the argument ends with "*"; "false" otherwise. All volumes are searched as documented
    # (and as the plugin's first version did).
    key = str(arg)
    prefix = key[:-1] if key.endswith("*") else None

    def extract(event: Mapping[str, Any]) -> list[Value]:
        if "auditID" not in event:
            return []
        found = spread(event, _HOST_PATHS, None)
        if found is None:
            return []
        for value in found:
            if value is MISSING:
                continue
            path = text(value)
            if path == key or (prefix is not None and path.startswith(prefix)):
                return ["true"]
        return ["false"]

    return extract


def _volume_types(arg: Arg) -> Extract:
    index = index_of(arg)

    def extract(event: Mapping[str, Any]) -> list[Value]:
        if "auditID" not in event:
            return []
        volumes = spread(event, _EACH_VOLUME, index)
        if volumes is None:
            return []
        # A volume's type is its one key besides "name" (hostPath, configMap, emptyDir, ...).
        return [
            key for volume in volumes if isinstance(volume, dict) for key in volume if key != "name"
        ]

    return extract


def _container_fields(containers: str, noun: str) -> list[FieldDef]:
    """The per-container fields of ``ka.req.pod.<containers>.*``: ``containers``,
    ``initContainers`` or ``ephemeralContainers``."""
    prefix = f"ka.req.pod.{containers}"
    context = (*_SPEC, containers, "securityContext")
    about = f"{_POD} the {noun}"
    return [
        indexed(f"{prefix}.name", f"{about} names.", along(*_SPEC, containers, "name")),
        indexed(f"{prefix}.image", f"{about} images.", _image_field(containers, repository=False)),
        indexed(
            f"{prefix}.image.repository",
            f"The same as {prefix}.image, but only the repository part (e.g. falcosecurity/falco).",
            _image_field(containers, repository=True),
        ),
        # Added to the plugin after the version read for this work: read like every other
        # per-container value, so a container's command list is one JSON text.
        indexed(f"{prefix}.command", f"{about} command.", along(*_SPEC, containers, "command")),
        indexed(f"{prefix}.args", f"{about} args.", along(*_SPEC, containers, "args")),
        indexed(f"{prefix}.host_port", f"{about} hostPort values.", _host_ports(containers)),
        indexed(
            f"{prefix}.privileged",
            f"{about} value of the privileged flag.",
            along(*context, "privileged"),
        ),
        indexed(
            f"{prefix}.allow_privilege_escalation",
            f"{about} value of the allowPrivilegeEscalation flag.",
            along(*context, "allowPrivilegeEscalation"),
        ),
        indexed(
            f"{prefix}.read_only_fs",
            f"{about} value of the readOnlyRootFilesystem flag.",
            along(*context, "readOnlyRootFilesystem"),
        ),
        indexed(f"{prefix}.run_as_user", f"{about} runAsUser uid.", along(*context, "runAsUser")),
        indexed(
            f"{prefix}.eff_run_as_user",
            f"{about} initial uid, from the container's or else the pod's security context, 0 "
            "if none is specified.",
            _effective(containers, "runAsUser"),
        ),
        indexed(
            f"{prefix}.run_as_group", f"{about} runAsGroup gid.", along(*context, "runAsGroup")
        ),
        indexed(
            f"{prefix}.eff_run_as_group",
            f"{about} initial gid, from the container's or else the pod's security context, 0 "
            "if none is specified.",
            _effective(containers, "runAsGroup"),
        ),
        indexed(f"{prefix}.proc_mount", f"{about} procMount types.", along(*context, "procMount")),
        # Per container, the capabilities.add list as the plugin renders it: one JSON text per
        # container (["NET_ADMIN","SYS_TIME"]), not one value per capability.
        indexed(
            f"{prefix}.add_capabilities",
            f"{about} capabilities to add.",
            along(*context, "capabilities", "add"),
        ),
    ]


def _pod_field(name: str, description: str, key: str) -> FieldDef:
    return plain(name, f"{_POD} {description}", scalar(*_SPEC, key))


POD_FIELDS: tuple[FieldDef, ...] = (
    *_container_fields("containers", "container's"),
    *_container_fields("initContainers", "init containers"),
    *_container_fields("ephemeralContainers", "ephemeral containers"),
    plain(
        "ka.req.container.image",
        "Deprecated by ka.req.pod.containers.image. Returns the image of the first container only",
        _images("containers", 0, repository=False),
    ),
    plain(
        "ka.req.container.image.repository",
        "Deprecated by ka.req.pod.containers.image.repository. Returns the repository of the "
        "first container only",
        _images("containers", 0, repository=True),
    ),
    plain(
        "ka.req.container.privileged",
        "Deprecated by ka.req.pod.containers.privileged. Returns true if any container has "
        "privileged=true",
        _any_privileged,
    ),
    _pod_field("ka.req.pod.host_ipc", "the value of the hostIPC flag.", "hostIPC"),
    _pod_field("ka.req.pod.host_network", "the value of the hostNetwork flag.", "hostNetwork"),
    plain(
        "ka.req.container.host_network",
        "Deprecated alias for ka.req.pod.host_network",
        scalar(*_SPEC, "hostNetwork"),
    ),
    _pod_field("ka.req.pod.host_pid", "the value of the hostPID flag.", "hostPID"),
    plain(
        "ka.req.pod.run_as_user",
        f"{_POD} the runAsUser uid specified in the security context for the pod.",
        scalar(*_SPEC, "securityContext", "runAsUser"),
    ),
    plain(
        "ka.req.pod.run_as_group",
        f"{_POD} the runAsGroup gid specified in the security context for the pod.",
        scalar(*_SPEC, "securityContext", "runAsGroup"),
    ),
    plain(
        "ka.req.pod.fs_group",
        f"{_POD} the fsGroup gid specified by the security context.",
        scalar(*_SPEC, "securityContext", "fsGroup"),
    ),
    plain(
        "ka.req.pod.supplemental_groups",
        f"{_POD} the supplementalGroup gids specified by the security context.",
        listed(*_SPEC, "securityContext", "supplementalGroups"),
        is_list=True,
    ),
    indexed(
        "ka.req.pod.volumes.hostpath",
        f"{_POD} all hostPath paths specified for all volumes",
        along(*_VOLUMES, "hostPath", "path"),
    ),
    FieldDef(
        "ka.req.volume.hostpath",
        "string",
        False,
        "key",
        True,
        "Deprecated by ka.req.pod.volumes.hostpath. Return true if the provided (host) path "
        "prefix is used by any volume",
        _hostpath_used,
    ),
    indexed(
        "ka.req.pod.volumes.flexvolume_driver",
        f"{_POD} all flexvolume drivers specified for all volumes",
        along(*_VOLUMES, "flexVolume", "driver"),
    ),
    indexed(
        "ka.req.pod.volumes.volume_type",
        f"{_POD} all volume types for all volumes",
        _volume_types,
    ),
)
