"""The condition language of Falco rules, parsed into a syntax tree (libsinsp's filter grammar).

``parse(text)`` is called by the loader once per rule and macro condition; the tree it returns
still names macros and lists, which ``consumers.rules.expand`` resolves, and fields as written,
which ``consumers.rules.compile`` binds. Precedence is Falco's: ``not`` over ``and`` over
``or``; comparisons read ``field op value``, ``field op (a, "b c", listname)`` or
``field exists``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "LIST_OPERATORS",
    "OPERATORS",
    "And",
    "Check",
    "ConditionError",
    "MacroRef",
    "Node",
    "Not",
    "Operand",
    "Or",
    "parse",
]

# Operators whose right-hand side is a list in parentheses, and the one that takes none.
LIST_OPERATORS = frozenset({"in", "intersects", "pmatch"})
_WORD_OPERATORS = frozenset(
    {
        "contains",
        "icontains",
        "bcontains",
        "startswith",
        "bstartswith",
        "endswith",
        "glob",
        "iglob",
        "regex",
        "exists",
        *LIST_OPERATORS,
    }
)
_SYMBOL_OPERATORS = ("==", "!=", "<=", ">=", "=", "<", ">")
OPERATORS = frozenset({*_WORD_OPERATORS, *_SYMBOL_OPERATORS})
_KEYWORDS = frozenset({"and", "or", "not"})

_SPACE = re.compile(r"\s*")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
# A bare (unquoted) value runs until a space, a parenthesis, a comma, '=' or a quote.
_BARE = re.compile(r"[^\s(),=\"']+")
_ESCAPES = {"\\": "\\", '"': '"', "'": "'", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class ConditionError(ValueError):
    """A condition that does not parse, or (raised by the compiler) that uses an operator or a
    value its field cannot take; the loader adds the file and the item to the message."""


@dataclass(frozen=True, slots=True)
class Operand:
    """A right-hand value as written: ``quoted`` values are always literals, a bare one inside
    parentheses may name a list."""

    text: str
    quoted: bool = False


@dataclass(frozen=True, slots=True)
class Check:
    """``field[arg] op operands``: ``operands`` is empty for ``exists``, holds one value for a
    scalar operator, and the items of the list in parentheses for ``in``, ``intersects`` and
    ``pmatch``."""

    field: str
    arg: str | None
    op: str
    operands: tuple[Operand, ...]

    @property
    def field_text(self) -> str:
        return self.field if self.arg is None else f"{self.field}[{self.arg}]"


@dataclass(frozen=True, slots=True)
class MacroRef:
    """A bare identifier where a comparison is expected: a macro's name."""

    name: str


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


Node: TypeAlias = And | Or | Not | Check | MacroRef


def parse(text: str) -> Node:
    """The syntax tree of condition ``text``; raises ConditionError saying what is wrong where."""
    return _Parser(text).parse()


class _Parser:
    """Recursive descent over the text; values are lexed where the grammar expects them, since
    a bare value may hold characters (``[``, ``.``) that elsewhere belong to a field."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def parse(self) -> Node:
        node = self._or()
        self._skip()
        if self.pos < len(self.text):
            raise self._error("unexpected text")
        return node

    def _error(self, problem: str) -> ConditionError:
        rest = self.text[self.pos : self.pos + 20]
        where = f"at column {self.pos + 1} ({rest!r})" if rest else "at the end"
        return ConditionError(f"{problem} {where} in condition {self.text.strip()!r}")

    def _skip(self) -> None:
        match = _SPACE.match(self.text, self.pos)
        assert match is not None  # \s* always matches
        self.pos = match.end()

    def _peek_char(self) -> str:
        self._skip()
        return self.text[self.pos : self.pos + 1]

    def _keyword(self, word: str) -> bool:
        """Consumes ``word`` when it is the next whole word."""
        self._skip()
        end = self.pos + len(word)
        if self.text.startswith(word, self.pos) and not (
            end < len(self.text) and (self.text[end].isalnum() or self.text[end] in "_.")
        ):
            self.pos = end
            return True
        return False

    def _or(self) -> Node:
        items = [self._and()]
        while self._keyword("or"):
            items.append(self._and())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def _and(self) -> Node:
        items = [self._not()]
        while self._keyword("and"):
            items.append(self._not())
        return items[0] if len(items) == 1 else And(tuple(items))

    def _not(self) -> Node:
        if self._keyword("not"):
            return Not(self._not())
        return self._primary()

    def _primary(self) -> Node:
        if self._peek_char() == "(":
            self.pos += 1
            node = self._or()
            if self._peek_char() != ")":
                raise self._error("expected ')'")
            self.pos += 1
            return node
        match = _IDENTIFIER.match(self.text, self.pos)
        if match is None or match.group() in _KEYWORDS:
            raise self._error("expected a field, a macro or '('")
        self.pos = match.end()
        name = match.group()
        arg = self._field_arg()
        op = self._operator()
        if op is None:
            if arg is not None:
                raise self._error(f"expected an operator after field {name}[{arg}]")
            return MacroRef(name)
        if op == "exists":
            return Check(name, arg, op, ())
        if op in LIST_OPERATORS:
            return Check(name, arg, op, self._list())
        return Check(name, arg, op, (self._value(),))

    def _field_arg(self) -> str | None:
        if self.text[self.pos : self.pos + 1] != "[":
            return None
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self._error("unclosed field argument")
        arg = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return arg

    def _operator(self) -> str | None:
        self._skip()
        for symbol in _SYMBOL_OPERATORS:
            if self.text.startswith(symbol, self.pos):
                self.pos += len(symbol)
                return "=" if symbol == "==" else symbol
        match = _IDENTIFIER.match(self.text, self.pos)
        if match is not None and match.group() in _WORD_OPERATORS:
            self.pos = match.end()
            return match.group()
        return None

    def _list(self) -> tuple[Operand, ...]:
        if self._peek_char() != "(":
            raise self._error("expected a list in parentheses")
        self.pos += 1
        items: list[Operand] = []
        if self._peek_char() == ")":
            self.pos += 1
            return ()
        while True:
            items.append(self._value())
            char = self._peek_char()
            self.pos += 1
            if char == ")":
                return tuple(items)
            if char != ",":
                self.pos -= 1
                raise self._error("expected ',' or ')' in list")

    def _value(self) -> Operand:
        char = self._peek_char()
        if char in ("'", '"'):
            return Operand(self._quoted(char), quoted=True)
        match = _BARE.match(self.text, self.pos)
        if match is None:
            raise self._error("expected a value")
        self.pos = match.end()
        return Operand(match.group())

    def _quoted(self, quote: str) -> str:
        out: list[str] = []
        index = self.pos + 1
        text = self.text
        while index < len(text):
            char = text[index]
            if char == quote:
                self.pos = index + 1
                return "".join(out)
            if char == "\\":
                escaped = text[index + 1 : index + 2]
                if escaped not in _ESCAPES:
                    self.pos = index
                    raise self._error("unknown escape in quoted value")
                out.append(_ESCAPES[escaped])
                index += 2
                continue
            out.append(char)
            index += 1
        raise self._error("unclosed quote")
