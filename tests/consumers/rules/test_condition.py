"""The condition parser: Falco's grammar, precedence, quoting and lists."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.rules.compile import compile_condition
from consumers.rules.condition import (
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


def check(field: str, op: str, *values: str, arg: str | None = None) -> Check:
    return Check(field, arg, op, tuple(Operand(value) for value in values))


def test_comparison_with_bare_value() -> None:
    assert parse("ka.verb=create") == check("ka.verb", "=", "create")
    assert parse("ka.verb == create") == check("ka.verb", "=", "create")
    assert parse("ka.user.name != system:anonymous") == check(
        "ka.user.name", "!=", "system:anonymous"
    )


@pytest.mark.parametrize(
    "op",
    ["<", "<=", ">", ">=", "contains", "icontains", "startswith", "endswith", "glob", "regex"],
)
def test_every_scalar_operator(op: str) -> None:
    assert parse(f"ka.uri {op} /api") == check("ka.uri", op, "/api")


@pytest.mark.parametrize("op", ["in", "intersects", "pmatch"])
def test_list_operators_take_a_list(op: str) -> None:
    assert parse(f"ka.uri {op} (/api, /apis)") == check("ka.uri", op, "/api", "/apis")
    with pytest.raises(ConditionError, match="expected a list"):
        parse(f"ka.uri {op} /api")


def test_exists_takes_no_value() -> None:
    assert parse("ka.target.namespace exists and ka.verb=get") == And(
        (check("ka.target.namespace", "exists"), check("ka.verb", "=", "get"))
    )


def test_quoted_values_with_escapes_and_spaces() -> None:
    node = parse(r"""ka.uri in ("a b", 'c,d', "q\"uote", 'it\'s', "tab\tx", "")""")
    assert isinstance(node, Check)
    assert node.operands == (
        Operand("a b", quoted=True),
        Operand("c,d", quoted=True),
        Operand('q"uote', quoted=True),
        Operand("it's", quoted=True),
        Operand("tab\tx", quoted=True),
        Operand("", quoted=True),
    )


def test_bare_values_keep_slashes_stars_brackets_and_colons() -> None:
    node = parse("ka.target.name glob web-[0-9]* or ka.uri startswith /api/v1/namespaces/*")
    assert node == Or(
        (
            check("ka.target.name", "glob", "web-[0-9]*"),
            check("ka.uri", "startswith", "/api/v1/namespaces/*"),
        )
    )


def test_field_arguments() -> None:
    assert parse("jevt.value[/spec/replicas] > 3") == check(
        "jevt.value", ">", "3", arg="/spec/replicas"
    )
    assert parse("ka.req.pod.containers.image[0] exists") == check(
        "ka.req.pod.containers.image", "exists", arg="0"
    )
    assert parse("ka.uri.param[watch]=true").field_text == "ka.uri.param[watch]"  # type: ignore[union-attr]


def test_empty_list_and_names_in_lists() -> None:
    assert parse("ka.verb in ()") == check("ka.verb", "in")
    assert parse("ka.verb in (write_verbs, get)") == check("ka.verb", "in", "write_verbs", "get")


def test_macro_references() -> None:
    assert parse("kevt and not kcreate") == And((MacroRef("kevt"), Not(MacroRef("kcreate"))))


def test_precedence_not_over_and_over_or() -> None:
    a, b, c = MacroRef("a"), MacroRef("b"), MacroRef("c")
    assert parse("a or b and c") == Or((a, And((b, c))))
    assert parse("a and b or c") == Or((And((a, b)), c))
    assert parse("not a and b") == And((Not(a), b))
    assert parse("not (a and b)") == Not(And((a, b)))
    assert parse("not not a") == Not(Not(a))
    assert parse("(a or b) and c") == And((Or((a, b)), c))


def test_keywords_need_a_word_boundary() -> None:
    assert parse("android or notable") == Or((MacroRef("android"), MacroRef("notable")))


def test_multiline_condition() -> None:
    text = """
      kevt
      and ka.verb in (create, update)
    """
    assert parse(text) == And((MacroRef("kevt"), check("ka.verb", "in", "create", "update")))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "expected a field, a macro or '('"),
        ("ka.verb =", "expected a value"),
        ("(a and b", "expected ')'"),
        ("a b", "unexpected text"),
        ("ka.verb in (a b)", "expected ',' or ')'"),
        ("ka.verb = 'open", "unclosed quote"),
        (r"ka.verb = 'a\qb'", "unknown escape"),
        ("jevt.value[/a = 1", "unclosed field argument"),
        ("ka.uri.param[watch] and a", "expected an operator"),
        ("a and or b", "expected a field"),
    ],
)
def test_syntax_errors_say_what_and_where(text: str, problem: str) -> None:
    with pytest.raises(ConditionError, match=re.escape(problem)) as error:
        parse(text)
    assert "in condition" in str(error.value)


# --- property: the boolean structure evaluates as Python evaluates it ----------------------

_EVENT = {"auditID": "1", "verb": "get"}
_ATOMS = {"T": "ka.verb = get", "F": "ka.verb = list"}


@st.composite
def expressions(draw: st.DrawFn, depth: int = 0) -> tuple[str, str]:
    """A condition and the same expression in Python, with True/False atoms."""
    kind = draw(
        st.sampled_from(["atom", "atom", "not", "and", "or", "paren"] if depth < 4 else ["atom"])
    )
    if kind == "atom":
        atom = draw(st.sampled_from(["T", "F"]))
        return _ATOMS[atom], "True" if atom == "T" else "False"
    if kind == "not":
        text, python = draw(expressions(depth + 1))
        return f"not {text}", f"not {python}"
    if kind == "paren":
        text, python = draw(expressions(depth + 1))
        return f"({text})", f"({python})"
    left, left_py = draw(expressions(depth + 1))
    right, right_py = draw(expressions(depth + 1))
    return f"{left} {kind} {right}", f"{left_py} {kind} {right_py}"


@given(expressions())
def test_boolean_structure_matches_python(expression: tuple[str, str]) -> None:
    text, python = expression
    evaluate = compile_condition(parse(text))
    assert evaluate(_EVENT, {}) is eval(python)


def test_tree_nodes_are_hashable_values() -> None:
    node: Node = parse("a and ka.verb in (x, 'y')")
    assert node == parse("a  and  ka.verb in (x,'y')")
    assert hash(node) == hash(parse("a and ka.verb in (x, 'y')"))
