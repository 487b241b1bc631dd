"""What ``audit-consumer rules test`` and ``--sink alerts`` share: which rules files to load
and the lowest priority to keep, as flags; and loading them."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from consumers.rules.ruleset import DEFAULT_RULES, Priority, RuleSet, load_rules

PRIORITY_NAMES = tuple(priority.label.lower() for priority in Priority)


def priority_arg(text: str) -> Priority:
    """An argparse ``type``: a priority named as in Falco's rules (``warning``, ``Notice``)."""
    try:
        return Priority.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is no priority; one of {', '.join(PRIORITY_NAMES)}"
        ) from exc


# What ``--rules`` takes for the rules shipped with audit-consumer, so that a deployment can load
# them and then its own files that append to or override them, without knowing their path.
SHIPPED = "default"
RULES_HELP = (
    "a rules file (Falco's language, k8s_audit source); repeat it to load several in order, a "
    f"later one appending to or overriding an earlier one; '{SHIPPED}' names the rules shipped "
    f"with audit-consumer (e.g. --rules {SHIPPED} --rules mine.yaml); without --rules: those"
)


def load(files: Sequence[str] | None, min_priority: Priority) -> RuleSet:
    """The rules of ``files`` in order (none: the shipped rules; ``SHIPPED`` names them), dropping
    rules below ``min_priority``. Raises RulesError naming the file, the item and the problem."""
    paths = [DEFAULT_RULES if file == SHIPPED else Path(file) for file in files or [SHIPPED]]
    return load_rules(paths, min_priority=min_priority)
