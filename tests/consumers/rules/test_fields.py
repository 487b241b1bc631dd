"""The fields of Falco's k8saudit and json plugins (consumers.rules.fields): every field on the
events of tests.support.events, on Falco's recorded traces (where they are beside the clone) and
on small events written here; absent values, lists, arguments and the plugin's own renderings."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from audit_common.errors import RulesError
from consumers.rules.fields import FIELDS, bind_field, is_field_name
from tests.support.corpus import corpus_events, corpus_file_events
from tests.support.events import audit_events, logged

# The published field lists: the k8saudit plugin's README (with the container families of its
# latest release) and the json plugin's, plus the two time fields of Falco's pre-plugin engine.
_CONTAINER_SUFFIXES = (
    "name",
    "image",
    "image.repository",
    "command",
    "args",
    "host_port",
    "privileged",
    "allow_privilege_escalation",
    "read_only_fs",
    "run_as_user",
    "eff_run_as_user",
    "run_as_group",
    "eff_run_as_group",
    "proc_mount",
    "add_capabilities",
)
PUBLISHED = {
    *(
        f"ka.req.pod.{containers}.{suffix}"
        for containers in ("containers", "initContainers", "ephemeralContainers")
        for suffix in _CONTAINER_SUFFIXES
    ),
    *(
        "ka.auditid",
        "ka.stage",
        "ka.auth.decision",
        "ka.auth.reason",
        "ka.auth.openshift.decision",
        "ka.auth.openshift.username",
        "ka.validations.admission.policy.failure",
        "ka.security.pod.violations",
        "ka.user.name",
        "ka.user.groups",
        "ka.impuser.name",
        "ka.verb",
        "ka.uri",
        "ka.uri.param",
        "ka.target.name",
        "ka.target.namespace",
        "ka.target.resource",
        "ka.target.subresource",
        "ka.target.pod.name",
        "ka.req.binding.subjects",
        "ka.req.binding.subjects.user_names",
        "ka.req.binding.subjects.serviceaccount_names",
        "ka.req.binding.subjects.serviceaccount_ns_names",
        "ka.req.binding.subjects.group_names",
        "ka.req.binding.role",
        "ka.req.binding.subject.has_name",
        "ka.req.configmap.name",
        "ka.req.configmap.obj",
        "ka.req.container.image",
        "ka.req.container.image.repository",
        "ka.req.pod.host_ipc",
        "ka.req.pod.host_network",
        "ka.req.container.host_network",
        "ka.req.pod.host_pid",
        "ka.req.container.privileged",
        "ka.req.pod.run_as_user",
        "ka.req.pod.run_as_group",
        "ka.req.role.rules",
        "ka.req.role.rules.apiGroups",
        "ka.req.role.rules.nonResourceURLs",
        "ka.req.role.rules.verbs",
        "ka.req.role.rules.resources",
        "ka.req.pod.fs_group",
        "ka.req.pod.supplemental_groups",
        "ka.req.service.type",
        "ka.req.service.ports",
        "ka.req.pod.volumes.hostpath",
        "ka.req.volume.hostpath",
        "ka.req.pod.volumes.flexvolume_driver",
        "ka.req.pod.volumes.volume_type",
        "ka.resp.name",
        "ka.response.code",
        "ka.response.reason",
        "ka.useragent",
        "ka.sourceips",
        "ka.cluster.name",
        "json.value",
        "json.obj",
        "json.rawtime",
        "jevt.value",
        "jevt.obj",
        "jevt.rawtime",
        "jevt.time",
        "jevt.time.iso8601",
    ),
}
# As the published tables say: the list fields that take no index, and the argument kinds.
LISTS_WITHOUT_INDEX = {
    "ka.user.groups",
    "ka.req.binding.subjects",
    "ka.req.binding.subjects.user_names",
    "ka.req.binding.subjects.serviceaccount_names",
    "ka.req.binding.subjects.serviceaccount_ns_names",
    "ka.req.binding.subjects.group_names",
    "ka.req.role.rules",
    "ka.req.pod.supplemental_groups",
}
KEYED = {"ka.uri.param", "ka.req.binding.subject.has_name", "ka.req.volume.hostpath"}
POINTED = {"json.value", "jevt.value"}
ARGUMENT_FOR = {"none": None, "index": None, "key": "command", "pointer": "/user/username"}
# The fields that answer for an audit event that holds nothing but its auditID.
ANSWER_ANYWAY = {"ka.auditid", "ka.req.binding.subject.has_name", "json.obj", "jevt.obj"}


def values(field: str, event: dict[str, Any], arg: str | None = None) -> list[Any]:
    return bind_field(field, arg).extract(event)


def audit(**fields: Any) -> dict[str, Any]:
    return {"kind": "Event", "auditID": "a1", "stage": "ResponseComplete", **fields}


def pod(*containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return audit(requestObject={"kind": "Pod", "spec": {"containers": list(containers), **spec}})


def test_every_published_field_is_defined_and_documented() -> None:
    assert set(FIELDS) == PUBLISHED
    for name, field in FIELDS.items():
        assert field.name == name
        assert field.description
        assert field.arg_required == (field.arg in ("key", "pointer")), name
        assert field.is_list == (field.arg == "index" or name in LISTS_WITHOUT_INDEX), name
        assert (field.arg == "key") == (name in KEYED), name
        assert (field.arg == "pointer") == (name in POINTED), name
        assert field.type == "string", name  # every field of both plugins is a string
        assert is_field_name(name)
    assert not is_field_name("ka.nope")
    assert not is_field_name("ka.uri.param[x]")


def extracts_strings(name: str, events: list[dict[str, Any]]) -> None:
    bound = bind_field(name, ARGUMENT_FOR[FIELDS[name].arg])
    for event in events:
        found = bound.extract(event)
        assert all(isinstance(value, str) for value in found)
        assert bound.is_list or len(found) <= 1


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_every_field_extracts_strings_from_every_event(name: str) -> None:
    extracts_strings(name, audit_events())


def test_every_field_extracts_strings_from_every_event_of_falcos_traces() -> None:
    events = corpus_events()
    for name in sorted(FIELDS):
        extracts_strings(name, events)


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_a_value_not_in_the_event_is_missing(name: str) -> None:
    bound = bind_field(name, ARGUMENT_FOR[FIELDS[name].arg])
    bare = bound.extract({"auditID": "a1"})
    assert (bare != []) == (name in ANSWER_ANYWAY)
    # JSON that is no audit event (the plugin checks for an auditID) has no ka.* value at all.
    if name.startswith("ka."):
        assert bound.extract({"kind": "Event", "verb": "get", "user": {"username": "u"}}) == []


CORPUS_CASES = [
    # file, field, argument, values
    ("create_nginx_pod_privileged_2nd_container.json", "ka.verb", None, ["create"]),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.response.code", None, ["201"]),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.target.namespace", None, ["default"]),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.target.name", None, []),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.target.pod.name", None, []),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.sourceips", None, ["::1"]),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.useragent", None, []),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.resp.name",
        None,
        ["nginx-deployment-544b59f8b8-ffkxm"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.user.name",
        None,
        ["system:serviceaccount:kube-system:replicaset-controller"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.user.groups",
        None,
        ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    ),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.auth.decision", None, ["allow"]),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.privileged",
        None,
        ["false", "true"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.privileged",
        "1",
        ["true"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.privileged",
        "2",
        [],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.container.privileged",
        None,
        ["true"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.image",
        None,
        ["nginx", "mysql:latest"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.image",
        "1",
        ["mysql:latest"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.image.repository",
        None,
        ["nginx", "mysql"],
    ),
    ("create_nginx_pod_privileged_2nd_container.json", "ka.req.container.image", None, ["nginx"]),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.name",
        None,
        ["nginx1", "mysql"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.containers.eff_run_as_user",
        None,
        ["0", "0"],
    ),
    (
        "create_nginx_pod_privileged_2nd_container.json",
        "ka.req.pod.initContainers.image",
        None,
        [],
    ),
    # A container without securityContext has no privileged value: no default "false".
    (
        "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
        "ka.req.pod.containers.privileged",
        None,
        ["true"],
    ),
    (
        "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json",
        "ka.req.pod.containers.privileged",
        "0",
        [],
    ),
    ("create_nginx_pod_hostnetwork.json", "ka.req.pod.host_network", None, ["true"]),
    ("create_nginx_pod_hostnetwork.json", "ka.req.container.host_network", None, ["true"]),
    ("create_nginx_pod_hostnetwork.json", "ka.req.pod.host_pid", None, []),
    ("create_nginx_pod_sensitive_mount.json", "ka.req.pod.volumes.hostpath", None, ["/etc"]),
    ("create_nginx_pod_sensitive_mount.json", "ka.req.pod.volumes.volume_type", None, ["hostPath"]),
    ("create_nginx_pod_sensitive_mount.json", "ka.req.volume.hostpath", "/etc", ["true"]),
    ("create_nginx_pod_sensitive_mount.json", "ka.req.volume.hostpath", "/e*", ["true"]),
    ("create_nginx_pod_sensitive_mount.json", "ka.req.volume.hostpath", "/e", ["false"]),
    ("exec_pod.json", "ka.stage", None, ["ResponseStarted"]),
    ("exec_pod.json", "ka.target.subresource", None, ["exec"]),
    ("exec_pod.json", "ka.target.pod.name", None, ["nginx-deployment-7998647bdf-phvq7"]),
    ("exec_pod.json", "ka.uri.param", "command", ["bash"]),
    ("exec_pod.json", "ka.uri.param", "container", ["nginx1"]),
    ("exec_pod.json", "ka.uri.param", "stderr", []),
    ("exec_pod.json", "ka.auth.reason", None, [""]),
    ("exec_pod.json", "ka.req.pod.containers.image", None, []),
    ("exec_pod.json", "jevt.value", "/objectRef/subresource", ["exec"]),
    ("exec_pod.json", "jevt.value", "/responseStatus/code", ["101"]),
    ("exec_pod.json", "jevt.value", "/sourceIPs", ['["192.168.99.1"]']),
    ("exec_pod.json", "jevt.value", "/sourceIPs/0", ["192.168.99.1"]),
    ("exec_pod.json", "jevt.value", "objectRef/name", ["nginx-deployment-7998647bdf-phvq7"]),
    ("exec_pod.json", "jevt.value", "/requestObject", []),
    ("exec_pod.json", "jevt.rawtime", None, ["1540561114902914000"]),
    ("exec_pod.json", "json.rawtime", None, ["1540561114902914000"]),
    ("exec_pod.json", "jevt.time", None, ["13:38:34.902914000"]),
    ("exec_pod.json", "jevt.time.iso8601", None, ["2018-10-26T13:38:34.902914000+0000"]),
    ("create_nginx_service_nodeport.json", "ka.req.service.type", None, ["NodePort"]),
    (
        "create_nginx_service_nodeport.json",
        "ka.req.service.ports",
        None,
        ['[{"nodePort":30080,"port":80,"protocol":"TCP","targetPort":80}]'],
    ),
    ("attach_cluster_admin_role.json", "ka.req.binding.role", None, ["cluster-admin"]),
    (
        "attach_cluster_admin_role.json",
        "ka.req.binding.subjects",
        None,
        ['{"apiGroup":"rbac.authorization.k8s.io","kind":"User","name":"minikube"}'],
    ),
    ("attach_cluster_admin_role.json", "ka.req.binding.subjects.user_names", None, ["minikube"]),
    ("attach_cluster_admin_role.json", "ka.req.binding.subjects.group_names", None, []),
    ("attach_cluster_admin_role.json", "ka.req.binding.subject.has_name", "anyone", ["true"]),
    ("create_cluster_role_wildcard_verbs.json", "ka.req.role.rules.verbs", None, ["*", "get"]),
    ("create_cluster_role_wildcard_verbs.json", "ka.req.role.rules.verbs", "1", ["get"]),
    ("create_cluster_role_wildcard_verbs.json", "ka.req.role.rules.resources", None, ["pods"]),
    ("create_cluster_role_wildcard_verbs.json", "ka.req.role.rules.apiGroups", None, [""]),
    ("create_cluster_role_pod_exec.json", "ka.req.role.rules.resources", None, ["pods/exec"]),
    (
        "create_cluster_role_pod_exec.json",
        "ka.req.role.rules.nonResourceURLs",
        "0",
        [],
    ),
    (
        "create_configmap_sensitive_values.json",
        "ka.req.configmap.obj",
        None,
        [
            '{"access.properties":"aws_access_key_id = MY-ID\\naws_secret_access_key = MY-KEY\\n",'
            '"ui.properties":"color.good=purple\\ncolor.bad=yellow\\nallow.textmode=true\\n"}'
        ],
    ),
    ("create_configmap_sensitive_values.json", "ka.req.configmap.name", None, ["my-config"]),
]


@pytest.mark.parametrize(("file", "field", "arg", "expected"), CORPUS_CASES)
def test_fields_of_falcos_traces(
    file: str, field: str, arg: str | None, expected: list[str]
) -> None:
    assert values(field, corpus_file_events(file)[0], arg) == expected


def test_role_rules_render_each_rule_as_compact_json() -> None:
    [event] = logged("clusterrole with wildcard verbs")
    rules = values("ka.req.role.rules", event)
    assert [orjson.loads(rule) for rule in rules] == event["requestObject"]["rules"]
    assert rules[0] == '{"apiGroups":[""],"resources":["pods"],"verbs":["*"]}'


def test_jevt_obj_is_the_whole_event_indented_by_two_spaces() -> None:
    event = {"auditID": "a1", "user": {"username": "u", "groups": []}, "verb": "get"}
    expected = (
        '{\n  "auditID": "a1",\n  "user": {\n    "username": "u",\n    "groups": []\n  },'
        '\n  "verb": "get"\n}'
    )
    assert values("jevt.obj", event) == [expected]
    assert values("json.obj", event) == [expected]
    started = logged("exec")[0]
    assert orjson.loads(values("jevt.obj", started)[0]) == started


CONTAINERS = (
    {
        "name": "app",
        "image": "registry.example/team/app:1.2@sha256:abc",
        "command": ["/bin/nc", "-lp", "1337"],
        "args": ["-v"],
        "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 19090}],
        "securityContext": {
            "privileged": True,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsUser": 1000,
            "runAsGroup": 3000,
            "procMount": "Unmasked",
            "capabilities": {"add": ["NET_ADMIN", "SYS_TIME"]},
        },
    },
    {"name": "sidecar", "image": "busybox", "ports": [{"protocol": "UDP"}]},
)
SMALL_POD = pod(
    *CONTAINERS,
    initContainers=[{"name": "init", "image": "alpine:3", "securityContext": {"runAsUser": 7}}],
    ephemeralContainers=[{"name": "debug", "image": "busybox:1", "args": ["sh"]}],
    hostIPC=False,
    hostPID=True,
    securityContext={"runAsUser": 500, "fsGroup": 2000, "supplementalGroups": [4000, 5000]},
    volumes=[
        {"name": "host", "hostPath": {"path": "/var/run/docker.sock"}},
        {"name": "flex", "flexVolume": {"driver": "vendor/driver"}},
        {"name": "cfg", "configMap": {"name": "c"}},
    ],
)
SMALL_CASES = [
    # field, argument, values: all on SMALL_POD
    ("ka.req.pod.containers.name", None, ["app", "sidecar"]),
    ("ka.req.pod.containers.name", "1", ["sidecar"]),
    ("ka.req.pod.containers.image.repository", None, ["registry.example/team/app", "busybox"]),
    ("ka.req.container.image.repository", None, ["registry.example/team/app"]),
    ("ka.req.pod.containers.command", None, ['["/bin/nc","-lp","1337"]']),
    ("ka.req.pod.containers.args", None, ['["-v"]']),
    # hostPort when set, else containerPort; a port with neither gives nothing.
    ("ka.req.pod.containers.host_port", None, ["8080", "19090"]),
    ("ka.req.pod.containers.host_port", "1", []),
    ("ka.req.pod.containers.privileged", None, ["true"]),
    ("ka.req.pod.containers.allow_privilege_escalation", None, ["false"]),
    ("ka.req.pod.containers.read_only_fs", None, ["true"]),
    ("ka.req.pod.containers.run_as_user", None, ["1000"]),
    ("ka.req.pod.containers.run_as_group", None, ["3000"]),
    ("ka.req.pod.containers.proc_mount", None, ["Unmasked"]),
    ("ka.req.pod.containers.add_capabilities", None, ['["NET_ADMIN","SYS_TIME"]']),
    # The container's own uid, else the pod's, else 0.
    ("ka.req.pod.containers.eff_run_as_user", None, ["1000", "500"]),
    ("ka.req.pod.containers.eff_run_as_user", "1", ["500"]),
    ("ka.req.pod.containers.eff_run_as_user", "2", []),
    ("ka.req.pod.containers.eff_run_as_group", None, ["3000", "0"]),
    ("ka.req.pod.initContainers.name", None, ["init"]),
    ("ka.req.pod.initContainers.image.repository", None, ["alpine"]),
    ("ka.req.pod.initContainers.eff_run_as_user", None, ["7"]),
    ("ka.req.pod.initContainers.privileged", None, []),
    ("ka.req.pod.ephemeralContainers.image", None, ["busybox:1"]),
    ("ka.req.pod.ephemeralContainers.args", "0", ['["sh"]']),
    ("ka.req.pod.ephemeralContainers.eff_run_as_group", None, ["0"]),
    ("ka.req.pod.host_ipc", None, ["false"]),
    ("ka.req.pod.host_pid", None, ["true"]),
    ("ka.req.pod.host_network", None, []),
    ("ka.req.pod.run_as_user", None, ["500"]),
    ("ka.req.pod.run_as_group", None, []),
    ("ka.req.pod.fs_group", None, ["2000"]),
    ("ka.req.pod.supplemental_groups", None, ["4000", "5000"]),
    ("ka.req.pod.volumes.hostpath", None, ["/var/run/docker.sock"]),
    ("ka.req.pod.volumes.hostpath", "1", []),
    ("ka.req.pod.volumes.flexvolume_driver", None, ["vendor/driver"]),
    ("ka.req.pod.volumes.volume_type", None, ["hostPath", "flexVolume", "configMap"]),
    ("ka.req.pod.volumes.volume_type", "2", ["configMap"]),
    ("ka.req.volume.hostpath", "/var/run/*", ["true"]),
    ("ka.req.volume.hostpath", "/var/run", ["false"]),
    ("jevt.value", "/requestObject/spec/hostPID", ["true"]),
    (
        "jevt.value",
        "/requestObject/spec/securityContext",
        ['{"runAsUser":500,"fsGroup":2000,"supplementalGroups":[4000,5000]}'],
    ),
    ("jevt.value", "/requestObject/spec/containers/1/image", ["busybox"]),
]


@pytest.mark.parametrize(("field", "arg", "expected"), SMALL_CASES)
def test_fields_of_a_pod(field: str, arg: str | None, expected: list[str]) -> None:
    assert values(field, SMALL_POD, arg) == expected


def test_a_container_without_image_fails_the_image_fields() -> None:
    event = pod({"name": "a", "image": "nginx"}, {"name": "b"})
    assert values("ka.req.pod.containers.image", event) == []
    assert values("ka.req.pod.containers.image", event, "0") == ["nginx"]
    assert values("ka.req.pod.containers.name", event) == ["a", "b"]


def test_deprecated_privileged_is_false_unless_a_container_is_privileged() -> None:
    unprivileged = pod({"name": "a", "securityContext": {"privileged": False}}, {"name": "b"})
    assert values("ka.req.container.privileged", unprivileged) == ["false"]
    assert values("ka.req.container.privileged", pod()) == ["false"]
    assert values("ka.req.container.privileged", audit()) == []


ENVELOPE = audit(
    requestURI="/api/v1/namespaces/ns/pods?watch&labelSelector=app%3Dweb&x=1&x=2&q=a+b",
    verb="watch",
    user={"username": "alice", "groups": ["dev"]},
    impersonatedUser={"username": "bob"},
    sourceIPs=["10.0.0.1", "10.0.0.2"],
    userAgent="kubectl/v1.30",
    objectRef={"resource": "pods", "namespace": "ns", "name": "web-1", "subresource": "log"},
    responseStatus={"code": 403, "reason": "Forbidden"},
    responseObject={"metadata": {"name": "web-1"}},
    stageTimestamp="2024-02-29T23:59:59.000000001+02:00",
    annotations={
        "authorization.k8s.io/decision": "forbid",
        "authorization.k8s.io/reason": "no RBAC",
        "authentication.openshift.io/decision": "allow",
        "authentication.openshift.io/username": "oc-user",
        "validation.policy.admission.k8s.io/validation_failure": '[{"message":"no"}]',
        "pod-security.kubernetes.io/audit-violations": "would violate baseline",
        "cluster_name": "prod-eu",
    },
)
ENVELOPE_CASES = [
    ("ka.uri.param", "watch", [""]),
    ("ka.uri.param", "labelSelector", ["app=web"]),
    ("ka.uri.param", "x", ["1"]),
    ("ka.uri.param", "q", ["a b"]),
    ("ka.uri.param", "absent", []),
    ("ka.impuser.name", None, ["bob"]),
    ("ka.user.groups", None, ["dev"]),
    ("ka.sourceips", None, ["10.0.0.1", "10.0.0.2"]),
    ("ka.sourceips", "1", ["10.0.0.2"]),
    ("ka.sourceips", "2", []),
    ("ka.useragent", None, ["kubectl/v1.30"]),
    ("ka.target.pod.name", None, ["web-1"]),
    ("ka.target.subresource", None, ["log"]),
    ("ka.response.code", None, ["403"]),
    ("ka.response.reason", None, ["Forbidden"]),
    ("ka.resp.name", None, ["web-1"]),
    ("ka.auth.decision", None, ["forbid"]),
    ("ka.auth.reason", None, ["no RBAC"]),
    ("ka.auth.openshift.decision", None, ["allow"]),
    ("ka.auth.openshift.username", None, ["oc-user"]),
    ("ka.validations.admission.policy.failure", None, ['[{"message":"no"}]']),
    ("ka.security.pod.violations", None, ["would violate baseline"]),
    ("ka.cluster.name", None, ["prod-eu"]),
    ("jevt.value", "/annotations/authorization.k8s.io~1decision", ["forbid"]),
    ("jevt.value", "/user/groups", ['["dev"]']),
    ("jevt.rawtime", None, ["1709243999000000001"]),
    ("jevt.time", None, ["21:59:59.000000001"]),
    ("jevt.time.iso8601", None, ["2024-02-29T21:59:59.000000001+0000"]),
]


@pytest.mark.parametrize(("field", "arg", "expected"), ENVELOPE_CASES)
def test_fields_of_the_envelope(field: str, arg: str | None, expected: list[str]) -> None:
    assert values(field, ENVELOPE, arg) == expected


@pytest.mark.parametrize(
    ("value", "rendered"),
    [(None, "null"), (True, "true"), (0, "0"), (1.5, "1.5"), ([], "[]"), ({"a": [1]}, '{"a":[1]}')],
)
def test_non_string_values_render_as_json_text(value: Any, rendered: str) -> None:
    event = audit(verb=value, odd={"a/b": {"~c": value}})
    assert values("ka.verb", event) == [rendered]
    assert values("jevt.value", event, "/odd/a~1b/~0c") == [rendered]


def test_binding_subject_names_by_kind() -> None:
    subjects = [
        {"kind": "User", "name": "alice"},
        {"kind": "Group", "name": "devs"},
        {"kind": "ServiceAccount", "name": "builder", "namespace": "ci"},
        {"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"},
    ]
    event = audit(requestObject={"roleRef": {"name": "edit"}, "subjects": subjects})
    assert values("ka.req.binding.subjects.user_names", event) == ["alice"]
    assert values("ka.req.binding.subjects.group_names", event) == ["devs"]
    assert values("ka.req.binding.subjects.serviceaccount_names", event) == ["builder", "default"]
    assert values("ka.req.binding.subjects.serviceaccount_ns_names", event) == [
        "ci:builder",
        "kube-system:default",
    ]
    assert len(values("ka.req.binding.subjects", event)) == 4


@pytest.mark.parametrize(
    "stamp",
    ["", "yesterday", "2024-02-30T00:00:00Z", "2024-01-01 00:00:00Z", "2024-01-01T00:00:00"],
)
def test_a_stage_timestamp_that_is_no_rfc3339_time_has_no_time(stamp: str) -> None:
    event = audit(stageTimestamp=stamp)
    for field in ("jevt.rawtime", "jevt.time", "jevt.time.iso8601"):
        assert values(field, event) == []


def test_bound_field_keeps_what_the_rule_wrote() -> None:
    bound = bind_field("ka.req.pod.containers.image", "0")
    assert (bound.text, bound.name, bound.arg, bound.type, bound.is_list) == (
        "ka.req.pod.containers.image[0]",
        "ka.req.pod.containers.image",
        "0",
        "string",
        True,
    )
    plain = bind_field("ka.verb", None)
    assert (plain.text, plain.arg, plain.is_list) == ("ka.verb", None, False)


@pytest.mark.parametrize(
    ("name", "arg", "problem"),
    [
        ("ka.nope", None, "unknown field"),
        ("evt.time", None, "unknown field"),
        ("ka.verb", "0", "takes no argument"),
        ("jevt.obj", "/x", "takes no argument"),
        ("ka.uri.param", None, "requires an argument"),
        ("jevt.value", None, "requires an argument"),
        ("ka.req.volume.hostpath", None, "requires an argument"),
        ("ka.req.binding.subject.has_name", None, "requires an argument"),
        ("ka.req.pod.containers.image", "first", "index argument"),
        ("ka.req.pod.containers.image", "-1", "index argument"),
        ("ka.sourceips", "\uff11", "index argument"),
        ("ka.req.role.rules.verbs", "", "empty argument"),
        ("jevt.value", "", "empty argument"),
    ],
)
def test_bad_field_references_are_rules_errors_naming_the_field(
    name: str, arg: str | None, problem: str
) -> None:
    with pytest.raises(RulesError, match=problem) as raised:
        bind_field(name, arg)
    assert name in str(raised.value)
