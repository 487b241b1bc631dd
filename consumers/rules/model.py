"""What a loaded rule is and what it produces: ``Priority``, ``Rule`` and ``Alert`` in Falco's
JSON output format. Re-exported by ``consumers.rules.ruleset``, which evaluates the rules."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from consumers.rules.bounds import cut_text, cut_value
from consumers.rules.compile import Evaluator
from consumers.rules.output import OutputFormat

__all__ = ["Alert", "Priority", "Rule"]


class Priority(enum.IntEnum):
    """Falco's priorities, most severe first (a smaller value is more severe)."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @classmethod
    def parse(cls, text: str) -> Priority:
        """The priority named ``text`` as rules files and ``--min-priority`` write it: any case,
        ``info`` for informational; raises ValueError naming the accepted names."""
        name = text.strip().upper()
        found = cls.__members__.get("INFORMATIONAL" if name == "INFO" else name)
        if found is None:
            names = ", ".join(member.label.lower() for member in cls)
            raise ValueError(f"unknown priority {text!r} (one of {names})")
        return found

    @property
    def label(self) -> str:
        """The name as Falco prints it: ``Warning``, ``Informational``."""
        return self.name.capitalize()


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled ``k8s_audit`` rule: built by the loader, evaluated by ``RuleSet``.

    ``index_key`` is a top-level ``and`` term the rule cannot match without: a field text and
    the values it must have (``("ka.verb", {"create"})``), or None."""

    name: str
    priority: Priority
    tags: tuple[str, ...]
    condition: Evaluator
    output: OutputFormat
    index_key: tuple[str, frozenset[str]] | None


@dataclass(frozen=True, slots=True)
class Alert:
    """One rule matching one event, as Falco reports it; made by ``RuleSet.evaluate`` and
    written by the alerts sink and ``audit-consumer rules test`` with ``to_json``."""

    time: str
    rule: str
    priority: Priority
    output: str
    source: str
    tags: tuple[str, ...]
    output_fields: Mapping[str, Any]
    hostname: str = ""
    truncated: bool = False  # a value was cut (``consumers.rules.bounds``); not in the JSON

    def bounded_json(self, max_bytes: int) -> tuple[bytes, bool]:
        """``to_json`` within ``max_bytes`` where it can be: when over, ``output`` and each value
        of ``output_fields`` are cut to an equal share (``bounds``); and whether it was cut.
        Called by the alerts sink for every alert."""
        body = self.to_json()
        if len(body) <= max_bytes:
            return body, False
        # Characters, not bytes: a share of characters is up to 4 bytes in UTF-8.
        share = max(16, max_bytes // (4 * (len(self.output_fields) + 2)))
        output, _ = cut_text(self.output, share)
        fields = {key: cut_value(value, share)[0] for key, value in self.output_fields.items()}
        return dataclasses.replace(self, output=output, output_fields=fields).to_json(), True

    def to_json(self) -> bytes:
        """Falco's ``json_output`` object: keys sorted as Falco's JSON library writes them,
        ``priority`` as Falco's label, tags sorted (Falco keeps them in a set)."""
        return orjson.dumps(
            {
                "hostname": self.hostname,
                "output": self.output,
                "output_fields": self.output_fields,
                "priority": self.priority.label,
                "rule": self.rule,
                "source": self.source,
                "tags": sorted(self.tags),
                "time": self.time,
            },
            option=orjson.OPT_SORT_KEYS,
        )
