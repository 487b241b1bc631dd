"""An expanded condition tree compiled into a tree of closures, with Falco's comparison semantics.

``compile_condition`` is called by the loader once per rule; the ``Evaluator`` it returns is
called by ``RuleSet.evaluate`` for every event with the event and that event's field cache
(field text -> extracted values), so that a field read by several rules is extracted once.

Semantics (libsinsp's): a field whose value is missing (``<NA>``, no values) makes every
comparison false, ``!=`` included; ``exists`` is true when it has a value. A list field
(``ka.user.groups``) takes only ``in`` (every value is in the set), ``intersects`` (some value
is) and ``exists``; a scalar field's ``in`` and ``intersects`` both test membership.
``pmatch`` is a path-prefix match, ``glob`` fnmatch-like and case-sensitive (``iglob`` folds
case), ``regex`` a full match. Values are parsed once for the field's type: ``uint64`` fields
compare numerically, ``bool`` fields take ``true``/``false``.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from operator import eq, ne
from typing import Any, TypeAlias

from consumers.rules.condition import And, Check, ConditionError, MacroRef, Node, Not
from consumers.rules.fields import BoundField, Value, bind_field, is_field_name

__all__ = ["Evaluator", "FieldCache", "compile_condition", "read_field"]

FieldCache: TypeAlias = dict[str, list[Value]]
Evaluator: TypeAlias = Callable[[Mapping[str, Any], FieldCache], bool]
_Test: TypeAlias = Callable[[Value], bool]
_ListTest: TypeAlias = Callable[[list[Value]], bool]

_ORDERINGS = frozenset({"<", "<=", ">", ">="})
_STRING_ONLY = frozenset(
    {"contains", "icontains", "startswith", "endswith", "glob", "iglob", "pmatch", "regex"}
)
_SUPPORTED = frozenset({"=", "!=", "in", "intersects", "exists", *_ORDERINGS, *_STRING_ONLY})


def read_field(field: BoundField) -> Callable[[Mapping[str, Any], FieldCache], list[Value]]:
    """A function giving ``field``'s values for an event, extracting them once per event."""
    key = field.text
    extract = field.extract

    def read(event: Mapping[str, Any], cache: FieldCache) -> list[Value]:
        values = cache.get(key)
        if values is None:
            values = cache[key] = extract(event)
        return values

    return read


def compile_condition(
    node: Node, bind: Callable[[str, str | None], BoundField] = bind_field
) -> Evaluator:
    """The evaluator of an expanded condition (no macro left). Raises ConditionError for an
    operator or value the field cannot take, RulesError (from ``bind``) for an unknown field."""
    if isinstance(node, Check):
        return _check(node, bind)
    if isinstance(node, Not):
        inner = compile_condition(node.item, bind)
        return lambda event, cache: not inner(event, cache)
    if isinstance(node, MacroRef):
        if is_field_name(node.name):
            raise ConditionError(f"field {node.name!r} is used without an operator")
        raise ConditionError(f"undefined macro {node.name!r}")
    items = tuple(compile_condition(item, bind) for item in node.items)
    return _all(items) if isinstance(node, And) else _any(items)


def _all(items: Sequence[Evaluator]) -> Evaluator:
    if len(items) == 2:
        first, second = items
        return lambda event, cache: first(event, cache) and second(event, cache)

    def evaluate(event: Mapping[str, Any], cache: FieldCache) -> bool:
        # A loop, not all() over a generator: this runs for every rule on every event.
        for item in items:  # noqa: SIM110
            if not item(event, cache):
                return False
        return True

    return evaluate


def _any(items: Sequence[Evaluator]) -> Evaluator:
    if len(items) == 2:
        first, second = items
        return lambda event, cache: first(event, cache) or second(event, cache)

    def evaluate(event: Mapping[str, Any], cache: FieldCache) -> bool:
        for item in items:  # noqa: SIM110  (as in _all)
            if item(event, cache):
                return True
        return False

    return evaluate


def _check(node: Check, bind: Callable[[str, str | None], BoundField]) -> Evaluator:
    field = bind(node.field, node.arg)
    op = node.op
    if op not in _SUPPORTED:
        raise ConditionError(f"operator {op!r} is not supported for field {field.text!r}")
    if op != "exists" and field.type != "string" and op in _STRING_ONLY:
        raise ConditionError(
            f"operator {op!r} needs a string field; {field.text!r} is {field.type}"
        )
    if field.type == "bool" and op in _ORDERINGS:
        raise ConditionError(f"operator {op!r} cannot compare bool field {field.text!r}")
    if op == "exists":
        return _on_values(field, lambda _values: True)
    values = [_typed(operand.text, field) for operand in node.operands]
    if not field.is_list:
        return _on_first(field, _scalar_test(op, values))
    if op not in ("in", "intersects"):
        raise ConditionError(
            f"list field {field.text!r} only supports operators 'exists', 'in' and "
            f"'intersects', not {op!r}"
        )
    members = frozenset(values)
    if op == "in":
        return _on_values(field, members.issuperset)
    return _on_values(field, lambda found: not members.isdisjoint(found))


# The two shapes of a comparison. The field cache is read inline rather than through
# read_field: one call less on the path every rule takes for every event.


def _on_values(field: BoundField, test: _ListTest) -> Evaluator:
    """A test of all of the field's values; false when it has none (<NA>)."""
    key, extract = field.text, field.extract

    def evaluate(event: Mapping[str, Any], cache: FieldCache) -> bool:
        values = cache.get(key)
        if values is None:
            values = cache[key] = extract(event)
        return test(values) if values else False

    return evaluate


def _on_first(field: BoundField, test: _Test) -> Evaluator:
    """A test of a scalar field's value; false when it has none (<NA>)."""
    key, extract = field.text, field.extract

    def evaluate(event: Mapping[str, Any], cache: FieldCache) -> bool:
        values = cache.get(key)
        if values is None:
            values = cache[key] = extract(event)
        return test(values[0]) if values else False

    return evaluate


def _typed(text: str, field: BoundField) -> Value:
    if field.type == "uint64":
        if not (text.isascii() and text.isdigit()):
            raise ConditionError(f"{text!r} is not a number, as field {field.text!r} needs")
        return int(text)
    if field.type == "bool":
        if text not in ("true", "false"):
            raise ConditionError(f"{text!r} is not true or false, as field {field.text!r} needs")
        return text == "true"
    return text


def _scalar_test(op: str, values: list[Value]) -> _Test:
    """The test of one extracted value against the operand(s), built once."""
    if op in ("in", "intersects"):
        return frozenset(values).__contains__
    if op == "pmatch":
        return _path_prefix_test([str(value) for value in values])
    (rhs,) = values
    if op == "=":
        return partial(eq, rhs)
    if op == "!=":
        return partial(ne, rhs)
    if op in _ORDERINGS:
        return _ordering(op, rhs)
    text = str(rhs)
    if op == "contains":
        return lambda value: text in str(value)
    if op == "icontains":
        lowered = text.lower()
        return lambda value: lowered in str(value).lower()
    if op == "startswith":
        return lambda value: str(value).startswith(text)
    if op == "endswith":
        return lambda value: str(value).endswith(text)
    if op == "regex":
        try:
            pattern = re.compile(text)
        except re.error as exc:
            raise ConditionError(f"invalid regex {text!r}: {exc}") from exc
        return lambda value: pattern.fullmatch(str(value)) is not None
    # glob, iglob: fnmatch's wildcards (* ? [...] [!...]), '*' crossing '/' as in Falco
    flags = re.IGNORECASE if op == "iglob" else 0
    matcher = re.compile(fnmatch.translate(text), flags | re.DOTALL).match
    return lambda value: matcher(str(value)) is not None


def _ordering(op: str, rhs: Value) -> _Test:
    # Both sides have the field's type, checked when the value was parsed.
    if op == "<":
        return lambda value: value < rhs  # type: ignore[operator]
    if op == "<=":
        return lambda value: value <= rhs  # type: ignore[operator]
    if op == ">":
        return lambda value: value > rhs  # type: ignore[operator]
    return lambda value: value >= rhs  # type: ignore[operator]


def _path_prefix_test(prefixes: list[str]) -> _Test:
    """libsinsp's pmatch: true when one of ``prefixes`` is the value or a leading run of its
    '/'-separated components (``/var/run`` matches ``/var/run/docker.sock``, not ``/var/runc``)."""
    wanted = frozenset(_components(prefix) for prefix in prefixes)
    longest = max((len(prefix) for prefix in wanted), default=0)

    def test(value: Value) -> bool:
        parts = _components(str(value))
        return any(parts[:size] in wanted for size in range(1, min(longest, len(parts)) + 1))

    return test


def _components(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)


# Fields an index may key rules on: set on every audit event, and tested first by most rules.
INDEXED_FIELDS = ("ka.target.resource", "ka.verb")


def index_key(node: Node) -> tuple[str, frozenset[str]] | None:
    """A top-level ``and`` term of an expanded condition that pins an indexed field to a set of
    values (``ka.verb = create``, ``ka.target.resource in (pods, deployments)``): the rule can
    match only events whose field has one of them. None when the condition has no such term."""
    terms = _conjuncts(node)
    for name in INDEXED_FIELDS:
        for term in terms:
            if (
                isinstance(term, Check)
                and term.field == name
                and term.arg is None
                and term.op in ("=", "in", "intersects")
            ):
                return name, frozenset(operand.text for operand in term.operands)
    return None


def _conjuncts(node: Node) -> list[Node]:
    if isinstance(node, And):
        return [term for item in node.items for term in _conjuncts(item)]
    return [node]
