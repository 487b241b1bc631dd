"""A rule's ``exceptions:``, merged across appends and turned into the condition Falco adds:
``rule_condition and not (exception_1 or exception_2 ...)``.

Each exception has a ``name``, ``fields``, optional ``comps`` and ``values``. With a list of
fields, each value is a tuple with one item per field, compared with its comp (``=`` by
default); with a single field, ``values`` is a flat list compared with the single comp (``in``
by default). For ``in``/``intersects``/``pmatch`` a value is a list of items, or a string put in
parentheses (so it may name a list). A later item appending to the rule with an exception of
the same name adds its ``values``. Used by the loader; errors are RulesError or ConditionError.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from audit_common.errors import RulesError
from consumers.rules.condition import LIST_OPERATORS, OPERATORS, And, Check, Node, Operand, Or

__all__ = ["RuleException", "exceptions_tree", "merge_exceptions", "scalar_text"]

_COMPS = OPERATORS - {"exists", "==", "bcontains", "bstartswith"}


@dataclass(frozen=True)
class RuleException:
    name: str
    fields: str | tuple[str, ...]
    comps: str | tuple[str, ...]
    values: tuple[Any, ...]


def merge_exceptions(
    existing: Sequence[RuleException], given: Sequence[Any], error: Callable[[str], RulesError]
) -> list[RuleException]:
    """``existing`` with the exceptions of an item added: a known name gets the new values."""
    merged = {exception.name: exception for exception in existing}
    for entry in given:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise error("each exception needs a 'name'")
        name = entry["name"]
        unknown = set(entry) - {"name", "fields", "comps", "values"}
        if unknown:
            raise error(f"exception {name!r}: unknown key(s) {sorted(unknown)}")
        values = entry.get("values") or []
        if not isinstance(values, list):
            raise error(f"exception {name!r}: 'values' must be a list")
        known = merged.get(name)
        if known is not None:
            merged[name] = RuleException(name, known.fields, known.comps, (*known.values, *values))
            continue
        if "fields" not in entry:
            raise error(f"exception {name!r} needs 'fields'")
        merged[name] = _new(name, entry, tuple(values), error)
    return list(merged.values())


def _new(
    name: str, entry: dict[str, Any], values: tuple[Any, ...], error: Callable[[str], RulesError]
) -> RuleException:
    fields = entry["fields"]
    comps = entry.get("comps")
    if isinstance(fields, str):
        comp = "in" if comps is None else comps
        if not isinstance(comp, str) or comp not in _COMPS:
            raise error(f"exception {name!r}: unknown comparison {comp!r}")
        return RuleException(name, fields, comp, values)
    if not isinstance(fields, list) or not all(isinstance(item, str) for item in fields):
        raise error(f"exception {name!r}: 'fields' must be a field or a list of fields")
    comp_list = ["="] * len(fields) if comps is None else comps
    if not isinstance(comp_list, list) or len(comp_list) != len(fields):
        raise error(f"exception {name!r}: 'comps' must list one comparison per field")
    for comp in comp_list:
        if comp not in _COMPS:
            raise error(f"exception {name!r}: unknown comparison {comp!r}")
    return RuleException(name, tuple(fields), tuple(comp_list), values)


def exceptions_tree(
    exceptions: Sequence[RuleException],
    split_field: Callable[[str], tuple[str, str | None]],
    where: Callable[[str], str],
) -> Node | None:
    """The condition matching any exception; None when no exception has values."""
    terms: list[Node] = []
    for exception in exceptions:
        if isinstance(exception.fields, str):
            if any(isinstance(value, list | dict) for value in exception.values):
                raise RulesError(
                    where(f"exception {exception.name!r}: with one field, values are strings")
                )
            terms.extend(_single(exception, split_field))
            continue
        for value in exception.values:
            if not isinstance(value, list) or len(value) != len(exception.fields):
                raise RulesError(
                    where(
                        f"exception {exception.name!r}: each value must list "
                        f"{len(exception.fields)} item(s), one per field: {value!r}"
                    )
                )
            checks = [
                _check(split_field(field), comp, item)
                for field, comp, item in zip(exception.fields, exception.comps, value, strict=True)
            ]
            terms.append(checks[0] if len(checks) == 1 else And(tuple(checks)))
    if not terms:
        return None
    return terms[0] if len(terms) == 1 else Or(tuple(terms))


def _single(
    exception: RuleException, split_field: Callable[[str], tuple[str, str | None]]
) -> list[Node]:
    assert isinstance(exception.fields, str) and isinstance(exception.comps, str)
    if not exception.values:
        return []
    field = split_field(exception.fields)
    if exception.comps in LIST_OPERATORS:
        return [_check(field, exception.comps, list(exception.values))]
    return [_check(field, exception.comps, value) for value in exception.values]


def _check(field: tuple[str, str | None], comp: str, value: Any) -> Check:
    name, arg = field
    if comp in LIST_OPERATORS:
        items = value if isinstance(value, list) else [value]
        return Check(name, arg, comp, tuple(Operand(scalar_text(item)) for item in items))
    return Check(name, arg, comp, (Operand(scalar_text(value), quoted=True),))


def scalar_text(value: Any) -> str:
    """A YAML scalar as the text Falco reads (``true``, not Python's ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
