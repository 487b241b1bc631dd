"""``--include`` / ``--exclude``: glob rules that drop the noise before it reaches the sink.

A rule is ``FIELD=GLOB[|GLOB...][,FIELD=GLOB...]``: it matches an event when every one of its
conditions does, and a condition matches when any value of the field matches any of its globs
(``fnmatch``, case-sensitive; ``group`` has one value per group). A field the event lacks
matches nothing. An event passes when it matches at least one ``--include`` rule (or there is
none) and no ``--exclude`` rule. For example::

    --exclude 'verb=get|list|watch,user=system:*'
    --include 'verb=create|update|patch|delete|deletecollection,resource=secrets|roles|rolebindings|clusterroles|clusterrolebindings'
"""  # noqa: E501

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from audit_common.errors import ConfigError
from consumers.events import ConsumedEvent


def _one(value: str | None) -> tuple[str, ...]:
    return () if value is None else (value,)


FIELDS: dict[str, Callable[[ConsumedEvent], tuple[str, ...]]] = {
    "verb": lambda event: _one(event.verb),
    "user": lambda event: _one(event.username),
    "group": lambda event: event.groups,
    "resource": lambda event: _one(event.resource),
    "namespace": lambda event: _one(event.namespace),
    "stage": lambda event: _one(event.stage),
    "level": lambda event: _one(event.level),
    "cluster": lambda event: _one(event.cluster),
    "code": lambda event: _one(event.response_code),
}


@dataclass(frozen=True)
class Condition:
    field: str
    globs: tuple[str, ...]

    def matches(self, event: ConsumedEvent) -> bool:
        values = FIELDS[self.field](event)
        return any(fnmatchcase(value, glob) for value in values for glob in self.globs)


@dataclass(frozen=True)
class Rule:
    text: str
    conditions: tuple[Condition, ...]

    def matches(self, event: ConsumedEvent) -> bool:
        return all(condition.matches(event) for condition in self.conditions)


def parse_rule(text: str) -> Rule:
    """Parse one ``--include``/``--exclude`` value; raises ConfigError saying what is wrong."""
    conditions = []
    for part in text.split(","):
        field, sep, globs = part.partition("=")
        field = field.strip()
        if not sep or field not in FIELDS or not globs.strip():
            raise ConfigError(
                f"filter {text!r}: expected FIELD=GLOB[|GLOB...][,FIELD=GLOB...] with FIELD "
                f"one of {', '.join(FIELDS)}; got {part!r}"
            )
        conditions.append(Condition(field, tuple(glob.strip() for glob in globs.split("|"))))
    return Rule(text, tuple(conditions))


@dataclass(frozen=True)
class EventFilter:
    """Decides, for the runner, which consumed events go on to the sink."""

    include: tuple[Rule, ...] = ()
    exclude: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, include: Sequence[str], exclude: Sequence[str]) -> EventFilter:
        """Raises ConfigError for a malformed rule."""
        return cls(tuple(map(parse_rule, include)), tuple(map(parse_rule, exclude)))

    def accepts(self, event: ConsumedEvent) -> bool:
        if self.include and not any(rule.matches(event) for rule in self.include):
            return False
        return not any(rule.matches(event) for rule in self.exclude)
