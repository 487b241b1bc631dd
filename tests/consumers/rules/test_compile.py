"""Compiled conditions: every operator with Falco's semantics, list fields, missing values
(<NA>), typed fields, and the index key."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit_common.errors import RulesError
from consumers.rules.compile import compile_condition, index_key
from consumers.rules.condition import ConditionError, parse
from consumers.rules.fields import BoundField, Value, bind_field

EVENT: dict[str, Any] = {
    "auditID": "4a1c",
    "stage": "ResponseComplete",
    "verb": "create",
    "requestURI": "/api/v1/namespaces/payments/pods/web-7/exec?command=sh",
    "user": {"username": "alice@example.com", "groups": ["system:authenticated", "team:dev"]},
    "objectRef": {"resource": "pods", "namespace": "payments", "name": "web-7"},
    "responseStatus": {"code": 101},
    "annotations": {"authorization.k8s.io/decision": "allow"},
    "userAgent": "kubectl/v1.31.2 (linux/amd64)",
}


def matches(condition: str, event: Mapping[str, Any] = EVENT) -> bool:
    return compile_condition(parse(condition))(event, {})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.verb = create", True),
        ("ka.verb = Create", False),
        ("ka.verb != create", False),
        ("ka.verb != delete", True),
        ("ka.verb < delete", True),
        ("ka.verb <= create", True),
        ("ka.verb > create", False),
        ("ka.verb >= create", True),
        ("ka.uri contains /exec", True),
        ("ka.uri contains /EXEC", False),
        ("ka.uri icontains /EXEC", True),
        ("ka.uri startswith /api/", True),
        ("ka.uri startswith /apis/", False),
        ("ka.uri endswith 'command=sh'", True),  # '=' ends a bare value
        ("ka.target.name glob web-*", True),
        ("ka.target.name glob web-[0-9]", True),
        ("ka.target.name glob web-[!0-9]", False),
        ("ka.target.name glob WEB-*", False),
        ("ka.target.name iglob WEB-?", True),
        ("ka.uri glob /api/*/pods/*", True),  # '*' crosses '/'
        ("ka.target.name regex web-[0-9]+", True),
        ("ka.target.name regex web", False),  # a full match
        ("ka.verb in (get, create)", True),
        ("ka.verb in (get, list)", False),
        ("ka.verb intersects (get, create)", True),  # a scalar field: same as in
        ("ka.verb in ()", False),
        ("ka.response.code = 101", True),  # every ka.* field is a string in the plugin
        ("ka.response.code startswith 1", True),
        ("ka.target.namespace exists", True),
        ("ka.target.subresource exists", False),
    ],
)
def test_scalar_operators(condition: str, expected: bool) -> None:
    assert matches(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.uri pmatch (/api/v1/namespaces/payments)", True),
        ("ka.uri pmatch (/api/v1/namespaces/pay)", False),  # whole path components only
        ("ka.uri pmatch (/apis, /api/v1)", True),
        ("ka.uri pmatch ('/api/v1/namespaces/payments/pods/web-7/exec?command=sh')", True),
        ("ka.uri pmatch (/api/v2)", False),
    ],
)
def test_pmatch_is_a_path_prefix_match(condition: str, expected: bool) -> None:
    assert matches(condition) is expected


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        # in: every value of the list is in the set
        ("ka.user.groups in (system:authenticated, team:dev, team:sre)", True),
        ("ka.user.groups in (system:authenticated)", False),
        # intersects: some value is
        ("ka.user.groups intersects (team:dev, team:sre)", True),
        ("ka.user.groups intersects (team:sre)", False),
        ("ka.user.groups exists", True),
    ],
)
def test_list_fields(condition: str, expected: bool) -> None:
    assert matches(condition) is expected


@pytest.mark.parametrize("groups", [None, []])
def test_an_empty_or_missing_list_matches_neither_in_nor_intersects(groups: Any) -> None:
    user: dict[str, Any] = {"username": "bob"}
    if groups is not None:
        user["groups"] = groups
    event = {**EVENT, "user": user}
    assert not matches("ka.user.groups in (a, b)", event)
    assert not matches("ka.user.groups intersects (a, b)", event)
    assert not matches("ka.user.groups exists", event)
    assert matches("not ka.user.groups in (a, b)", event)


@pytest.mark.parametrize("op", ["=", "!=", "contains", "startswith", "<", "glob"])
def test_list_fields_take_only_in_intersects_and_exists(op: str) -> None:
    with pytest.raises(ConditionError, match="only supports operators 'exists', 'in' and"):
        compile_condition(parse(f"ka.user.groups {op} team:dev"))


@pytest.mark.parametrize(
    "condition",
    [
        "ka.target.subresource = exec",
        "ka.target.subresource != exec",  # <NA> makes != false too
        "ka.target.subresource in (exec, attach)",
        "ka.target.subresource contains e",
        "ka.target.subresource startswith ''",
        "ka.target.subresource glob *",
        "ka.target.subresource pmatch (/)",
    ],
)
def test_a_missing_value_fails_every_comparison(condition: str) -> None:
    assert not matches(condition)
    assert matches(f"not {condition}")


def test_field_arguments_reach_the_field() -> None:
    assert matches("jevt.value[/objectRef/resource] = pods")
    assert matches("jevt.value[/user/groups/1] = team:dev")
    assert matches("ka.uri.param[command] = sh")
    assert not matches("jevt.value[/objectRef/apiGroup] exists")


def test_each_field_is_extracted_once_per_event() -> None:
    calls: list[str] = []

    def bind(name: str, arg: str | None) -> BoundField:
        field = bind_field(name, arg)

        def extract(event: Mapping[str, Any]) -> list[Value]:
            calls.append(field.text)
            return field.extract(event)

        return BoundField(field.text, field.name, field.arg, field.type, field.is_list, extract)

    evaluate = compile_condition(
        parse("ka.verb in (get, create) and ka.verb != delete and ka.user.name = alice"), bind
    )
    cache: dict[str, list[Value]] = {}
    assert not evaluate(EVENT, cache)
    assert calls == ["ka.verb", "ka.user.name"]
    assert cache == {"ka.verb": ["create"], "ka.user.name": ["alice@example.com"]}


# --- typed fields (the k8saudit fields are all strings; Falco's types still apply) ----------


def typed(kind: Any, values: list[Value], *, is_list: bool = False) -> Any:
    def bind(name: str, arg: str | None) -> BoundField:
        return BoundField(name, name, arg, kind, is_list, lambda _event: values)

    return bind


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("n = 10", True),
        ("n = 010", True),  # a number, not text
        ("n != 10", False),
        ("n < 9", False),
        ("n < 11", True),
        ("n <= 10", True),
        ("n > 9", True),  # numeric: as text "10" < "9"
        ("n >= 11", False),
        ("n in (1, 10)", True),
        ("n in (1, 2)", False),
    ],
)
def test_uint64_fields_compare_numerically(condition: str, expected: bool) -> None:
    assert compile_condition(parse(condition), typed("uint64", [10]))({}, {}) is expected


@pytest.mark.parametrize(
    ("condition", "problem"),
    [
        ("n = ten", "'ten' is not a number"),
        ("n contains 1", "needs a string field"),
        ("n glob 1*", "needs a string field"),
    ],
)
def test_uint64_fields_refuse_text(condition: str, problem: str) -> None:
    with pytest.raises(ConditionError, match=problem):
        compile_condition(parse(condition), typed("uint64", [10]))


def test_bool_fields() -> None:
    bind = typed("bool", [True])
    assert compile_condition(parse("b = true"), bind)({}, {})
    assert not compile_condition(parse("b = false"), bind)({}, {})
    assert compile_condition(parse("b != false"), bind)({}, {})
    with pytest.raises(ConditionError, match="'yes' is not true or false"):
        compile_condition(parse("b = yes"), bind)
    with pytest.raises(ConditionError, match="cannot compare bool field"):
        compile_condition(parse("b > false"), bind)


def test_list_of_bool_intersects() -> None:
    bind = typed("bool", [False, True], is_list=True)
    assert compile_condition(parse("b intersects (true)"), bind)({}, {})
    assert not compile_condition(parse("b in (true)"), bind)({}, {})


def test_unknown_fields_operators_and_bare_fields_are_errors() -> None:
    with pytest.raises(RulesError, match=r"unknown field 'ka\.nope'"):
        compile_condition(parse("ka.nope = 1"))
    with pytest.raises(ConditionError, match="'bcontains' is not supported"):
        compile_condition(parse("ka.uri bcontains 41"))
    with pytest.raises(ConditionError, match=r"field 'ka\.verb' is used without an operator"):
        compile_condition(parse("ka.verb and ka.uri exists"))
    with pytest.raises(ConditionError, match="invalid regex"):
        compile_condition(parse("ka.uri regex '('"))


@pytest.mark.parametrize(
    ("condition", "key"),
    [
        ("ka.verb = create", ("ka.verb", {"create"})),
        ("ka.verb in (create, update) and ka.uri exists", ("ka.verb", {"create", "update"})),
        (
            "ka.stage = x and (ka.target.resource = pods and ka.verb = get)",
            ("ka.target.resource", {"pods"}),
        ),
        ("ka.verb = get or ka.verb = list", None),
        ("not ka.verb = get", None),
        ("ka.verb != get", None),
        ("ka.target.resource startswith pod", None),
    ],
)
def test_index_key_is_a_top_level_conjunct(
    condition: str, key: tuple[str, set[str]] | None
) -> None:
    found = index_key(parse(condition))
    assert found == (None if key is None else (key[0], frozenset(key[1])))


# --- property: each operator against a reference written in plain Python ------------------


def quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_TEXT = st.text(alphabet='aAb/.-"\\ ', max_size=6)
_REFERENCE: dict[str, Callable[[str, str], bool]] = {
    "=": lambda value, rhs: value == rhs,
    "!=": lambda value, rhs: value != rhs,
    "<": lambda value, rhs: value < rhs,
    "<=": lambda value, rhs: value <= rhs,
    ">": lambda value, rhs: value > rhs,
    ">=": lambda value, rhs: value >= rhs,
    "contains": lambda value, rhs: rhs in value,
    "icontains": lambda value, rhs: rhs.lower() in value.lower(),
    "startswith": lambda value, rhs: value.startswith(rhs),
    "endswith": lambda value, rhs: value.endswith(rhs),
}


@given(op=st.sampled_from(sorted(_REFERENCE)), value=_TEXT, rhs=_TEXT)
def test_scalar_operators_match_the_reference(op: str, value: str, rhs: str) -> None:
    event = {**EVENT, "verb": value}
    assert matches(f"ka.verb {op} {quote(rhs)}", event) is _REFERENCE[op](value, rhs)
    missing = {key: item for key, item in EVENT.items() if key != "verb"}
    assert matches(f"ka.verb {op} {quote(rhs)}", missing) is False


@given(values=st.lists(_TEXT, max_size=4), rhs=st.lists(_TEXT, max_size=4))
def test_list_operators_match_the_reference(values: list[str], rhs: list[str]) -> None:
    event = {**EVENT, "user": {"username": "u", "groups": values}}
    items = ", ".join(quote(item) for item in rhs)
    assert matches(f"ka.user.groups in ({items})", event) is (
        bool(values) and set(values) <= set(rhs)
    )
    assert matches(f"ka.user.groups intersects ({items})", event) is bool(set(values) & set(rhs))
    assert matches(f"ka.verb in ({items})", {**EVENT, "verb": "x"}) is ("x" in rhs)


@given(value=st.text(alphabet="ab/.", max_size=6), pattern=st.text(alphabet="ab/*?", max_size=5))
def test_glob_matches_fnmatch_without_case_folding(value: str, pattern: str) -> None:
    event = {**EVENT, "verb": value}
    assert matches(f"ka.verb glob {quote(pattern)}", event) is fnmatch.fnmatchcase(value, pattern)
