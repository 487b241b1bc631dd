"""Rules files loaded and compiled: ``read_rules`` is called by
``consumers.rules.ruleset.load_rules``; ``consumers.rules.items`` reads the files, this module
compiles the rules of source ``k8s_audit`` (expanding macros, lists and exceptions). Rules of
another source (Falco's default source is ``syscall``) are checked for shape by the reader but
never compiled, and counted. Every problem is a RulesError naming the file, the item and the
problem.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from audit_common.errors import RulesError
from consumers.rules.compile import compile_condition, index_key
from consumers.rules.condition import And, Check, ConditionError, MacroRef, Node, Not, parse
from consumers.rules.exceptions import exceptions_tree
from consumers.rules.expand import Definitions
from consumers.rules.fields import BoundField, bind_field, is_field_name
from consumers.rules.items import Reader, RuleInfo
from consumers.rules.model import Priority, Rule
from consumers.rules.output import OutputFormat

__all__ = ["SOURCE", "Loaded", "read_rules"]

SOURCE = "k8s_audit"
_FIELD_TEXT = re.compile(r"([^\[\]]+)(?:\[(.*)\])?")


@dataclass(frozen=True)
class Loaded:
    """The rules of ``k8s_audit`` to evaluate, in file order, and what was left out."""

    rules: tuple[Rule, ...]
    skipped_sources: Counter[str]
    disabled: int
    below_priority: int
    skipped_unknown: int


def read_rules(paths: Sequence[Path], min_priority: Priority) -> Loaded:
    """Reads ``paths`` in order and compiles their enabled ``k8s_audit`` rules of priority
    ``min_priority`` or more severe. Raises RulesError."""
    reader = Reader()
    for path in paths:
        reader.read(Path(path))
    skipped_sources: Counter[str] = Counter()
    disabled = below = unknown = 0
    rules: list[Rule] = []
    for info in sorted(reader.rules.values(), key=lambda info: info.index):
        if info.source != SOURCE:
            skipped_sources[info.source] += 1
        elif not info.enabled:
            disabled += 1
        elif info.priority > min_priority:
            below += 1
        else:
            rule = _compile(info, reader.definitions)
            if rule is None:
                unknown += 1
            else:
                rules.append(rule)
    return Loaded(tuple(rules), skipped_sources, disabled, below, unknown)


def _compile(info: RuleInfo, definitions: Definitions) -> Rule | None:
    def where(problem: str) -> str:
        return f"{info.file}: rule {info.name!r}: {problem}"

    try:
        tree = parse(info.condition)
        exceptions = exceptions_tree(info.exceptions, _split_field, where)
    except ConditionError as exc:
        raise RulesError(where(str(exc))) from exc
    if exceptions is not None:
        tree = And((tree, Not(exceptions)))
    tree = definitions.expand(tree, where)
    if info.skip_unknown and not _fields_known(tree):
        return None
    try:
        condition = compile_condition(tree)
    except (ConditionError, RulesError) as exc:  # bind_field's errors name only the field
        raise RulesError(where(str(exc))) from exc
    try:
        output = OutputFormat.parse(info.output, _bind_output(where))
    except ValueError as exc:
        raise RulesError(where(f"output: {exc}")) from exc
    tags = tuple(sorted(set(info.tags)))
    return Rule(info.name, info.priority, tags, condition, output, index_key(tree))


def _split_field(text: str) -> tuple[str, str | None]:
    match = _FIELD_TEXT.fullmatch(text.strip())
    if match is None:
        raise ConditionError(f"{text!r} is not a field")
    return match.group(1), match.group(2)


def _fields_known(tree: Node) -> bool:
    if isinstance(tree, Check):
        return is_field_name(tree.field)
    if isinstance(tree, MacroRef):
        return True
    if isinstance(tree, Not):
        return _fields_known(tree.item)
    return all(_fields_known(item) for item in tree.items)


def _bind_output(where: Callable[[str], str]) -> Callable[[str, str | None], BoundField]:
    def bind(name: str, arg: str | None) -> BoundField:
        try:
            return bind_field(name, arg)
        except RulesError as exc:
            raise RulesError(where(f"output: {exc}")) from exc

    return bind
