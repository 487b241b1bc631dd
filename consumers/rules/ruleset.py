"""Loaded rules evaluated on audit events: ``load_rules(paths)`` -> ``RuleSet``, and
``RuleSet.evaluate(event)`` -> the ``Alert`` of every rule that matches, in file order.

``evaluate`` is on the alerts consumer's hot path. Each rule is a compiled closure tree; fields
are extracted at most once per event (a per-event cache shared by the rules and the output);
and rules whose condition requires ``ka.target.resource`` or ``ka.verb`` to have given values
are indexed by them, so an event is tested only against the rules it could match plus those
that require neither.
"""

from __future__ import annotations

import logging
import socket
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.rules.compile import FieldCache, read_field
from consumers.rules.fields import Value, bind_field
from consumers.rules.loader import SOURCE, read_rules
from consumers.rules.model import Alert, Priority, Rule
from consumers.rules.output import event_time_ns, format_time

__all__ = ["DEFAULT_RULES", "Alert", "Priority", "Rule", "RuleSet", "load_rules"]

log = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).parent / "default_rules.yaml"

_Reader = Callable[[Mapping[str, Any], FieldCache], list[Value]]


@dataclass(frozen=True)
class _Index:
    """Rule positions by the value of one field, for the rules keyed on that field."""

    read: _Reader
    by_value: Mapping[Value, tuple[int, ...]]


@dataclass(frozen=True)
class RuleSet:
    """The enabled ``k8s_audit`` rules of the loaded files, ready to evaluate; built by
    ``load_rules``. ``skipped_sources`` counts the rules of other sources by source;
    ``disabled`` and ``below_priority`` the k8s_audit rules not evaluated."""

    rules: tuple[Rule, ...]
    skipped_sources: Mapping[str, int] = field(default_factory=Counter)
    disabled: int = 0
    below_priority: int = 0
    hostname: str = field(default_factory=socket.gethostname)
    _always: tuple[int, ...] = field(init=False, repr=False)
    _indexes: tuple[_Index, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        always: list[int] = []
        keyed: dict[str, dict[Value, list[int]]] = {}
        for position, rule in enumerate(self.rules):
            if rule.index_key is None:
                always.append(position)
                continue
            name, values = rule.index_key
            table = keyed.setdefault(name, {})
            for value in values:
                table.setdefault(value, []).append(position)
        indexes = tuple(
            _Index(read_field(bind_field(name, None)), {v: tuple(p) for v, p in table.items()})
            for name, table in keyed.items()
        )
        object.__setattr__(self, "_always", tuple(always))
        object.__setattr__(self, "_indexes", indexes)

    @property
    def rule_count(self) -> int:
        return len(self.rules)

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(rule.name for rule in self.rules)

    @property
    def skipped(self) -> int:
        """How many rules of other sources were skipped."""
        return sum(self.skipped_sources.values())

    def evaluate(self, event: Mapping[str, Any], field_max: int | None = None) -> list[Alert]:
        """The alerts of the rules matching ``event`` (a decoded audit event), in file order;
        called by the alerts sink and ``rules test`` for every event. ``field_max`` caps each
        substituted value (``OutputFormat.render``). Never raises: a rule that
        fails on an odd event shape does not match. An event without a usable
        ``stageTimestamp`` matches nothing, as the k8saudit plugin drops it."""
        cache: FieldCache = {}
        alerts: list[Alert] = []
        time_ns: int | None = None
        time = ""
        for position in self._candidates(event, cache):
            rule = self.rules[position]
            try:
                if not rule.condition(event, cache):
                    continue
                if time_ns is None:
                    time_ns = event_time_ns(event)
                    if time_ns is None:
                        return []
                    time = format_time(time_ns)
                rendered = rule.output.render(event, cache, time_ns, rule.priority.label, field_max)
            except Exception:  # any event shape: a rule that cannot read it does not match
                log.debug("rule %r failed on an event", rule.name, exc_info=True)
                continue
            alerts.append(
                Alert(
                    time,
                    rule.name,
                    rule.priority,
                    rendered.output,
                    SOURCE,
                    rule.tags,
                    rendered.fields,
                    self.hostname,
                    rendered.cut,
                )
            )
        return alerts

    def _candidates(self, event: Mapping[str, Any], cache: FieldCache) -> Sequence[int]:
        found: list[int] | None = None
        for index in self._indexes:
            values = index.read(event, cache)
            hits = index.by_value.get(values[0]) if values else None
            if hits:
                found = [*(self._always if found is None else found), *hits]
        # A rule is keyed on one field at most: no position appears twice.
        return self._always if found is None else sorted(found)


def load_rules(paths: Sequence[Path], *, min_priority: Priority = Priority.DEBUG) -> RuleSet:
    """The rules of ``paths``, read in order (later files append to and override earlier
    ones); called once at start-up by the alerts sink and ``rules test``. Raises RulesError
    naming the file, the item and the problem."""
    loaded = read_rules(paths, min_priority)
    log.info(
        "loaded %d k8s_audit rules from %d file(s); skipped %d of other sources, %d disabled, "
        "%d below priority %s, %d with unknown fields",
        len(loaded.rules),
        len(paths),
        sum(loaded.skipped_sources.values()),
        loaded.disabled,
        loaded.below_priority,
        min_priority.label,
        loaded.skipped_unknown,
    )
    return RuleSet(loaded.rules, loaded.skipped_sources, loaded.disabled, loaded.below_priority)
