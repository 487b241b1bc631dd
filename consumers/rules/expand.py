"""Macros and lists resolved in a condition's syntax tree, as Falco's rule compiler does.

Falco resolves names once every rules file is loaded. A rule sees every macro and every list,
wherever they are defined; a macro's condition sees every list but only the macros *defined*
before the macro (before its own definition, or before its latest ``append``/``override``,
which moves it later), and a list's items expand only lists defined before it in the same way.
A bare value in parentheses that names a list is replaced by the list's items; any other is a
literal. The loader fills a ``Definitions`` and asks it for each rule's expanded tree; errors
are RulesError naming the file and item at fault.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from audit_common.errors import RulesError
from consumers.rules.condition import (
    LIST_OPERATORS,
    And,
    Check,
    ConditionError,
    MacroRef,
    Node,
    Not,
    Operand,
    Or,
    parse,
)

__all__ = ["Definitions", "ListDef", "MacroDef"]

_EVERYWHERE = 2**63  # the visibility of a rule's condition: after every item


@dataclass
class ListDef:
    """A list as loaded: ``index`` is where it was first defined, ``visibility`` where it was
    last defined, appended to or overridden (what its own references may see)."""

    name: str
    items: list[str]
    index: int
    visibility: int
    file: str
    resolved: tuple[str, ...] | None = None


@dataclass
class MacroDef:
    """A macro as loaded (condition text, appended to as Falco does it: by text)."""

    name: str
    condition: str
    index: int
    visibility: int
    file: str


@dataclass
class Definitions:
    """Every macro and list of the loaded files, by name."""

    lists: dict[str, ListDef] = field(default_factory=dict)
    macros: dict[str, MacroDef] = field(default_factory=dict)
    _expanded: dict[str, Node] = field(default_factory=dict)
    _expanding: set[str] = field(default_factory=set)

    def list_items(self, name: str, visibility: int = _EVERYWHERE) -> tuple[str, ...] | None:
        """The items of list ``name`` (its own list references expanded) if it is visible from
        ``visibility``, else None."""
        found = self.lists.get(name)
        if found is None or found.index >= visibility:
            return None
        if found.resolved is None:
            items: list[str] = []
            for item in found.items:
                # A list defined later is not replaced, as in Falco; a list cannot see itself.
                nested = self.list_items(item, found.visibility) if item != name else None
                items.extend(nested if nested is not None else (item,))
            found.resolved = tuple(items)
        return found.resolved

    def expand(
        self, node: Node, where: Callable[[str], str], visibility: int = _EVERYWHERE
    ) -> Node:
        """``node`` with every macro (defined before ``visibility``: any, for a rule) replaced
        by its expanded condition and every list name in parentheses by the list's items;
        ``where(problem)`` words a RulesError for the item being expanded."""
        if isinstance(node, MacroRef):
            return self._macro(node.name, visibility, where)
        if isinstance(node, Check):
            if node.op not in LIST_OPERATORS:
                return node
            operands: list[Operand] = []
            for operand in node.operands:
                items = None if operand.quoted else self.list_items(operand.text)
                if items is None:
                    operands.append(operand)
                else:
                    operands.extend(Operand(item, quoted=True) for item in items)
            return Check(node.field, node.arg, node.op, tuple(operands))
        if isinstance(node, Not):
            return Not(self.expand(node.item, where, visibility))
        if isinstance(node, And):
            return And(tuple(self.expand(item, where, visibility) for item in node.items))
        return Or(tuple(self.expand(item, where, visibility) for item in node.items))

    def _macro(self, name: str, visibility: int, where: Callable[[str], str]) -> Node:
        found = self.macros.get(name)
        if found is None or found.index >= visibility:
            raise RulesError(where(f"undefined macro {name!r}"))
        cached = self._expanded.get(name)
        if cached is not None:
            return cached
        if name in self._expanding:
            raise RulesError(where(f"macro {name!r} refers to itself"))
        self._expanding.add(name)
        try:

            def in_macro(problem: str) -> str:
                return f"{found.file}: macro {name!r}: {problem}"

            try:
                tree = parse(found.condition)
            except ConditionError as exc:
                raise RulesError(in_macro(str(exc))) from exc
            expanded = self.expand(tree, in_macro, found.visibility)
        finally:
            self._expanding.discard(name)
        self._expanded[name] = expanded
        return expanded
