"""The items of Falco rules files, read in order into rules, macros and lists, as Falco's rule
loader reads them; ``consumers.rules.loader`` compiles what they hold.

Items are ``rule``, ``macro``, ``list``, ``required_engine_version`` and
``required_plugin_versions`` (accepted, not enforced). A later item changes an earlier one with
``append: true`` (lists get items; macros and rules get condition text appended after a space,
rules also output, tags and exceptions) or ``override:`` (``append`` or ``replace`` per key), or
toggles a rule with only ``enabled``; redefining a name replaces it in place. Every problem is a
RulesError naming the file, the item and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from audit_common.errors import RulesError
from consumers.rules.exceptions import RuleException, merge_exceptions, scalar_text
from consumers.rules.expand import Definitions, ListDef, MacroDef
from consumers.rules.model import Priority

__all__ = ["Reader", "RuleInfo"]

_DEFAULT_SOURCE = "syscall"  # a rule without source: Falco's default
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_RULE_KEYS = frozenset(
    {
        "rule",
        "desc",
        "condition",
        "output",
        "priority",
        "source",
        "tags",
        "enabled",
        "exceptions",
        "append",
        "override",
        "warn_evttypes",
        "skip-if-unknown-filter",
        "capture",
        "capture_duration",
    }
)
# Keys an override item carries besides the keys it overrides.
_IDENTITY_KEYS = frozenset({"rule", "macro", "list", "source", "override"})
_RULE_APPENDABLE = frozenset({"condition", "output", "desc", "tags", "exceptions"})
_RULE_REPLACEABLE = _RULE_APPENDABLE | {
    "priority",
    "enabled",
    "warn_evttypes",
    "capture",
    "capture_duration",
}


@dataclass
class RuleInfo:
    """A rule as read, before compilation."""

    name: str
    file: str
    index: int
    condition: str
    output: str
    priority: Priority
    source: str
    tags: list[str]
    enabled: bool
    exceptions: list[RuleException]
    skip_unknown: bool


@dataclass
class Reader:
    """Reads rules files in order into rules, macros and lists."""

    definitions: Definitions = field(default_factory=Definitions)
    rules: dict[str, RuleInfo] = field(default_factory=dict)
    index: int = 0

    def read(self, path: Path) -> None:
        """Read one rules file, as Falco's loader (``rule_loader::reader::read``) does: every
        YAML document of it in turn (``---`` separates them); an empty document, or one of
        comments only, holds nothing; a document is a list of items, and a null item (``-``
        alone on a line, as in falcosecurity's k8saudit rules 0.6.0) is skipped. Items are
        numbered from 1 through the whole file. Raises RulesError."""
        try:
            documents = list(yaml.load_all(path.read_text(encoding="utf-8"), Loader=_Loader))
        except OSError as exc:
            raise RulesError(f"{path}: cannot read the rules file: {exc}") from exc
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RulesError(f"{path}: not valid YAML: {exc}") from exc
        position = 0
        for document in documents:
            if document is None:
                continue
            if not isinstance(document, list):
                raise RulesError(f"{path}: a rules file is a YAML list of items")
            for item in document:
                position += 1
                if item is None:
                    continue
                self.index += 1
                self._item(str(path), position, item)

    def _item(self, file: str, position: int, item: Any) -> None:
        if not isinstance(item, dict):
            raise RulesError(f"{file}: item {position}: not a mapping")
        if "rule" in item:
            _Item(file, f"rule {item['rule']!r}", item, _RULE_KEYS).as_rule(self)
        elif "macro" in item:
            keys = frozenset({"macro", "condition", "append", "override"})
            _Item(file, f"macro {item['macro']!r}", item, keys).as_macro(self)
        elif "list" in item:
            keys = frozenset({"list", "items", "append", "override"})
            _Item(file, f"list {item['list']!r}", item, keys).as_list(self)
        elif "required_engine_version" in item:
            _Item(file, "required_engine_version", item, frozenset(item)).engine_version()
        elif "required_plugin_versions" in item:
            _Item(file, "required_plugin_versions", item, frozenset(item)).plugin_versions()
        else:
            raise RulesError(f"{file}: item {position}: unknown item with keys {sorted(item)}")


@dataclass
class _Item:
    """One item of a rules file, its keys checked as they are read."""

    file: str
    what: str
    data: dict[str, Any]
    keys: frozenset[str]

    def __post_init__(self) -> None:
        unknown = sorted(set(self.data) - self.keys)
        if unknown:
            raise self.error(f"unknown key(s) {', '.join(map(repr, unknown))}")

    def error(self, problem: str) -> RulesError:
        return RulesError(f"{self.file}: {self.what}: {problem}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = self.data.get(key, default)
        if key in self.data and not isinstance(value, kind):
            raise self.error(f"{key!r} has the wrong type ({type(value).__name__})")
        return value

    def text(self, key: str, default: str | None = None) -> Any:
        value = self.data.get(key, default)
        if isinstance(value, bool) or value is None or isinstance(value, dict | list):
            if key in self.data:
                raise self.error(f"{key!r} must be a string")
            return value
        return str(value).strip()

    def name(self, key: str) -> str:
        name = self.text(key)
        if not name:
            raise self.error(f"{key!r} needs a name")
        return str(name)

    def mode(self) -> tuple[bool, dict[str, str]]:
        """Whether the item is a legacy ``append``, and its ``override`` modes by key."""
        append = self.get("append", bool, False)
        override = self.get("override", dict, {})
        if append and override:
            raise self.error("'append' and 'override' cannot be used together")
        for key, mode in override.items():
            if mode not in ("append", "replace"):
                raise self.error(f"override of {key!r} must be 'append' or 'replace'")
            if key not in self.data:
                raise self.error(f"override names {key!r}, which the item does not have")
        if override:
            extra = set(self.data) - set(override) - _IDENTITY_KEYS
            if extra:
                raise self.error(f"key(s) {sorted(extra)} appear without an override mode")
        return append, override

    def strings(self, key: str) -> list[str]:
        values = self.get(key, list, [])
        if any(isinstance(value, dict | list) or value is None for value in values):
            raise self.error(f"{key!r} must be a list of strings")
        return [scalar_text(value) for value in values]

    def engine_version(self) -> None:
        if not isinstance(self.data["required_engine_version"], str | int | float):
            raise self.error("must be a version")

    def plugin_versions(self) -> None:
        plugins = self.get("required_plugin_versions", list)
        for plugin in plugins:
            entries = (
                [plugin, *(plugin.get("alternatives") or [])] if isinstance(plugin, dict) else []
            )
            if not entries or any(
                not isinstance(entry, dict) or not {"name", "version"} <= set(entry)
                for entry in entries
            ):
                raise self.error("each plugin (and alternative) needs a name and a version")

    def as_list(self, reader: Reader) -> None:
        name = self.name("list")
        append, override = self.mode()
        items = self.strings("items")
        existing = reader.definitions.lists.get(name)
        if append or override.get("items") == "append":
            if existing is None:
                raise self.error("append to a list that is not defined")
            existing.items.extend(items)
            existing.visibility = reader.index
        elif override:
            if existing is None:
                raise self.error("override of a list that is not defined")
            existing.items = items
            existing.visibility = reader.index
        else:
            if "items" not in self.data:
                raise self.error("a list needs 'items'")
            index = existing.index if existing else reader.index
            reader.definitions.lists[name] = ListDef(name, items, index, reader.index, self.file)

    def as_macro(self, reader: Reader) -> None:
        name = self.name("macro")
        append, override = self.mode()
        condition = self.text("condition")
        if not condition:
            raise self.error("a macro needs a 'condition'")
        existing = reader.definitions.macros.get(name)
        if append or override:
            if existing is None:
                raise self.error("append or override of a macro that is not defined")
            if append or override.get("condition") == "append":
                existing.condition = f"{existing.condition} {condition}"
            else:
                existing.condition = condition
            existing.visibility = reader.index
            existing.file = self.file
        else:
            index = existing.index if existing else reader.index
            reader.definitions.macros[name] = MacroDef(
                name, condition, index, reader.index, self.file
            )

    def as_rule(self, reader: Reader) -> None:
        name = self.name("rule")
        append, override = self.mode()
        existing = reader.rules.get(name)
        if set(self.data) == {"rule", "enabled"}:
            if existing is None:
                raise self.error("'enabled' given for a rule that is not defined")
            existing.enabled = self.get("enabled", bool)
            return
        if append or override:
            if existing is None:
                raise self.error("append or override of a rule that is not defined")
            modes = override or {
                key: "append" for key in self.data if key not in ("rule", "append", "source")
            }
            for key, mode in modes.items():
                allowed = _RULE_APPENDABLE if mode == "append" else _RULE_REPLACEABLE
                if key not in allowed:
                    raise self.error(f"{key!r} cannot be {mode}ed")
                self._change(existing, key, mode == "append")
            existing.file = self.file
            return
        missing = [
            key for key in ("condition", "desc", "output", "priority") if key not in self.data
        ]
        if missing:
            raise self.error(f"a rule needs {', '.join(map(repr, missing))}")
        info = RuleInfo(
            name=name,
            file=self.file,
            index=existing.index if existing else reader.index,
            condition=self.text("condition"),
            output=self.text("output"),
            priority=self.priority(),
            source=self.text("source", _DEFAULT_SOURCE),
            tags=self.strings("tags"),
            enabled=self.get("enabled", bool, True),
            exceptions=merge_exceptions([], self.get("exceptions", list, []), self.error),
            skip_unknown=self.get("skip-if-unknown-filter", bool, False),
        )
        if not info.condition:
            raise self.error("a rule needs a 'condition'")
        reader.rules[name] = info  # a redefinition keeps the first one's place

    def priority(self) -> Priority:
        try:
            return Priority.parse(str(self.data["priority"]))
        except ValueError as exc:
            raise self.error(str(exc)) from exc

    def _change(self, rule: RuleInfo, key: str, append: bool) -> None:
        if key == "condition":
            text = self.text(key)
            rule.condition = f"{rule.condition} {text}" if append else text
        elif key == "output":
            text = self.text(key)
            rule.output = f"{rule.output} {text}" if append else text
        elif key == "tags":
            tags = self.strings(key)
            rule.tags = [*rule.tags, *tags] if append else tags
        elif key == "exceptions":
            given = self.get(key, list)
            rule.exceptions = merge_exceptions(rule.exceptions if append else [], given, self.error)
        elif key == "priority":
            rule.priority = self.priority()
        elif key == "enabled":
            rule.enabled = self.get(key, bool)
        # desc, warn_evttypes, capture, capture_duration: checked, nothing to keep
