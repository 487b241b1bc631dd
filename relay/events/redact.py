"""Redaction of Secret contents and tokens in audit events, before anything reaches Kafka.

At Request level and above, audit events carry whole Secrets (kubernetes#96319). The relay
replaces every value under ``data``/``stringData``/``binaryData`` of those objects, and the
token of TokenRequest and TokenReview objects, by a marker holding a keyed hash (HMAC-SHA256)
of the value: two equal values give equal markers, so "was the same password set twice" stays
answerable, but without the key nothing about a value can be learned or brute-forced.

Where secrets are looked for, in ``requestObject`` and ``responseObject``:
- the object itself, the ``items`` of a list, the ``rows[].object`` of a Table and the
  ``object`` of a WatchEvent, when the event's ``objectRef.resource`` is redacted (``secrets``
  plus ``--redact-resource``);
- any object whose own ``kind`` is ``Secret`` (or a token kind), at any depth: in a List of
  Lists, a custom resource's template, a patch;
- the ``kubectl.kubernetes.io/last-applied-configuration`` annotation of such an object (a JSON
  string holding the object again), and that of any object whose annotation may hold one;
- PATCH bodies: merge and strategic-merge patches are objects and are handled as above; JSON
  patches are arrays of operations whose ``value`` is redacted when the ``path`` reaches the
  contents, the annotation, or the whole object;
- any body of a redacted resource that is neither an object nor an array (a raw body the
  apiserver could not decode) is replaced as a whole.

What the redactor cannot read it cannot clear: ``relay.events.clearance.clear``, which the item
builder calls for each item it parses, says so, and the builder then withholds the item's bytes
from the dead letter it makes of it (``relay.events.dead_letters``) rather than publish them.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from audit_common.errors import ConfigError
from audit_common.options import EnvArgumentParser
from audit_common.secrets import read_secret_file

log = logging.getLogger(__name__)

REDACTED_ANNOTATION = "audit-relay/redacted"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
MARKER_PREFIX = "redacted:hmac-sha256:"
DEFAULT_RESOURCES = frozenset({"secrets"})
MIN_KEY_BYTES = 32
_CONTENTS = ("data", "stringData", "binaryData")
_TOKEN_KINDS = {"TokenRequest": ("status", "token"), "TokenReview": ("spec", "token")}
# (resource, subresource) of the token objects, for bodies that carry no kind.
_TOKEN_RESOURCES = {
    ("serviceaccounts", "token"): "TokenRequest",
    ("tokenreviews", ""): "TokenReview",
}
# What ``may_redact`` looks for in an event's objects. An escape that may write a letter
# ("\\u0053ecret" is "Secret") could hide them.
_LETTER_ESCAPE = re.compile(rb"\\u00[4-7]")
_KIND_NAMES = (b"Secret", b"TokenRe")


@dataclass(frozen=True)
class RedactionSettings:
    """Whether and what the relay redacts; the key is never in repr."""

    enabled: bool = True
    resources: frozenset[str] = DEFAULT_RESOURCES
    hmac_key: bytes = field(default_factory=lambda: secrets.token_bytes(MIN_KEY_BYTES), repr=False)


def add_redaction_arguments(parser: EnvArgumentParser) -> None:
    """Add the redaction flags of ``audit-relay``."""
    add = parser.add_option
    add(
        "--no-redact",
        action="store_true",
        help="publish Secret contents and tokens as received (redaction is on by default)",
    )
    add(
        "--redact-resource",
        action="append",
        metavar="RESOURCE",
        help="another resource (plural, e.g. configmaps) whose data/stringData/binaryData "
        "values are redacted like those of secrets",
    )
    add(
        "--redact-hmac-key-file",
        help=f"file whose first line (at least {MIN_KEY_BYTES} characters, e.g. from "
        "'openssl rand -hex 32') keys the hashes in redaction markers; without it a random key "
        "is made at start, and markers are comparable only within one run of the relay",
    )


def redaction_settings_from_args(args: Any) -> RedactionSettings:
    """Build the settings from parsed flags; reads the key file. Raises ConfigError."""
    resources = DEFAULT_RESOURCES | {name.strip().lower() for name in args.redact_resource}
    if "" in resources:
        raise ConfigError("--redact-resource: empty resource name")
    if args.no_redact:
        log.warning("redaction is off (--no-redact): Secret contents and tokens reach Kafka")
        return RedactionSettings(enabled=False, resources=frozenset(resources))
    if args.redact_hmac_key_file:
        key = read_secret_file(args.redact_hmac_key_file, "--redact-hmac-key-file").encode()
        if len(key) < MIN_KEY_BYTES:
            raise ConfigError(
                f"--redact-hmac-key-file: key is {len(key)} bytes, at least {MIN_KEY_BYTES} needed"
            )
    else:
        # Made once here, before workers start, so that every worker of this run agrees.
        key = secrets.token_bytes(MIN_KEY_BYTES)
        log.warning(
            "no --redact-hmac-key-file: redaction markers use a random key and are not "
            "comparable across restarts of the relay"
        )
    return RedactionSettings(enabled=True, resources=frozenset(resources), hmac_key=key)


class Redactor:
    """Replaces secret values in audit events, in place, by keyed-hash markers.

    ``relay.events.build.build_batch`` calls ``redact`` on each event before encoding it. Whatever
    the shape of the event, ``redact`` never raises.
    """

    def __init__(self, key: bytes, resources: Iterable[str] = DEFAULT_RESOURCES) -> None:
        if not key:
            raise ValueError("Redactor needs a non-empty key")
        self._key = key
        self._resources = frozenset(resources)

    def marker(self, value: Any) -> str:
        """The marker that replaces ``value``: equal values give equal markers."""
        if isinstance(value, str):
            raw = value.encode("utf-8", "surrogatepass")
        else:
            try:
                raw = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
            except (TypeError, orjson.JSONEncodeError):
                raw = repr(value).encode("utf-8", "surrogatepass")
        return MARKER_PREFIX + hmac.new(self._key, raw, hashlib.sha256).hexdigest()

    def redact(self, event: dict[str, Any]) -> bool:
        """Redact ``event`` in place; True (and the annotation set) when anything was replaced."""
        ref = event.get("objectRef")
        ref = ref if isinstance(ref, dict) else {}
        resource, subresource = _text(ref, "resource"), _text(ref, "subresource")
        secret_context = resource in self._resources and not subresource
        token_kind = _TOKEN_RESOURCES.get((resource, subresource))
        changed = False
        for name in ("requestObject", "responseObject"):
            if name in event:
                changed |= self._body(event, name, secret_context, token_kind)
        if changed:
            annotations = event.get("annotations")
            if not isinstance(annotations, dict):
                annotations = event["annotations"] = {}
            annotations[REDACTED_ANNOTATION] = "true"
        return changed

    def may_redact(self, resource: str, subresource: str, bodies: Sequence[bytes]) -> bool:
        """Whether ``redact`` could change an event: False only when it certainly would not.

        ``relay.events.build.build_batch`` asks, for each event it could publish without parsing it,
        with the event's objectRef resource and subresource ("" when absent) and the JSON of its
        requestObject and responseObject (those present). It looks for what ``redact`` acts on:
        a redacted or token resource, or the kind of a Secret or token object. Never raises.
        """
        if not bodies:
            return False
        secret_context = resource in self._resources and not subresource
        if secret_context or (resource, subresource) in _TOKEN_RESOURCES:
            return True
        return any(_may_hold_secret(body) for body in bodies)

    def _body(
        self, event: dict[str, Any], name: str, secret_context: bool, token_kind: str | None
    ) -> bool:
        body = event[name]
        if isinstance(body, str):
            return bool(secret_context or token_kind) and self._replace(event, name)
        cleared: set[int] = set()  # the objects whose contents are markers already
        changed = False
        if isinstance(body, dict):
            # Where the objectRef tells the kind: objects of a typed list carry none.
            for candidate in _objects_in(body):
                if secret_context:
                    changed |= self._secret(candidate, cleared)
                if token_kind and candidate.get("kind") not in _TOKEN_KINDS:
                    changed |= self._token(candidate, token_kind)
        elif isinstance(body, list):
            for op in body:
                changed |= self._patch_op(op, secret_context, cleared)
        return self._anywhere(body, cleared) or changed

    def _anywhere(self, root: Any, cleared: set[int]) -> bool:
        """Redact every object of kind Secret or token within ``root``, at any depth, and the
        last-applied-configuration annotation of any object that may hold one.

        A loop over a stack, not recursion: a patch body may be nested as deep as its parser
        reads (orjson: 1,024 levels).
        """
        changed = False
        stack = [root]
        while stack:
            value = stack.pop()
            if isinstance(value, list):
                stack.extend(value)
                continue
            if not isinstance(value, dict):
                continue
            kind = value.get("kind")
            if kind == "Secret":
                changed |= self._secret(value, cleared)
            elif isinstance(kind, str) and kind in _TOKEN_KINDS:
                changed |= self._token(value, kind)
            elif id(value) not in cleared:
                changed |= self._applied_anywhere(value)
            stack.extend(value.values())
        return changed

    def _replace(self, holder: dict[str, Any], name: str) -> bool:
        holder[name] = self.marker(holder[name])
        return True

    def _secret(self, obj: dict[str, Any], cleared: set[int]) -> bool:
        if id(obj) in cleared:
            return False
        cleared.add(id(obj))
        changed = False
        for name in _CONTENTS:
            if name in obj:
                changed |= self._contents(obj, name)
        metadata = obj.get("metadata")
        if isinstance(metadata, dict):
            changed |= self._metadata(metadata)
        return changed

    def _contents(self, holder: dict[str, Any], name: str) -> bool:
        contents = holder[name]
        if contents is None:
            return False
        if not isinstance(contents, dict):
            return self._replace(holder, name)
        changed = False
        for key, value in contents.items():
            # In a merge patch null deletes the key: it reveals nothing, and keeps its meaning.
            if value is not None:
                changed = self._replace(contents, key)
        return changed

    def _metadata(self, metadata: dict[str, Any]) -> bool:
        annotations = metadata.get("annotations")
        return isinstance(annotations, dict) and self._annotations(annotations)

    def _annotations(self, annotations: dict[str, Any]) -> bool:
        return LAST_APPLIED in annotations and self._last_applied(annotations, LAST_APPLIED)

    def _applied_anywhere(self, obj: dict[str, Any]) -> bool:
        """Redact the Secrets in the last-applied-configuration of an object that is none (a
        custom resource may embed a Secret's template), when its text may hold one."""
        metadata = obj.get("metadata")
        annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
        if not isinstance(annotations, dict):
            return False
        text = annotations.get(LAST_APPLIED)
        if not isinstance(text, str) or not _may_hold_secret(text.encode("utf-8", "replace")):
            return False
        return self._last_applied(annotations, LAST_APPLIED, as_secret=False)

    def _last_applied(self, holder: dict[str, Any], name: str, *, as_secret: bool = True) -> bool:
        """Redact the object held, as a JSON string, in ``holder[name]``: as a Secret (it is the
        annotation of one), and the Secrets and tokens within it at any depth. What cannot be
        read or written again is replaced whole."""
        text = holder[name]
        if text is None:
            return False
        try:
            applied = orjson.loads(text) if isinstance(text, str) else None
        except orjson.JSONDecodeError:
            return self._replace(holder, name)
        if as_secret and not isinstance(applied, dict):
            return self._replace(holder, name)
        cleared: set[int] = set()
        changed = isinstance(applied, dict) and as_secret and self._secret(applied, cleared)
        if not self._anywhere(applied, cleared) and not changed:
            return False
        try:
            encoded = orjson.dumps(applied).decode()
        except orjson.JSONEncodeError:  # nested deeper than orjson writes (255), read up to 1024
            return self._replace(holder, name)
        assert isinstance(text, str)
        holder[name] = encoded + ("\n" if text.endswith("\n") else "")
        return True

    def _token(self, obj: dict[str, Any], kind: str | None) -> bool:
        if kind is None:
            return False
        section_name, field_name = _TOKEN_KINDS[kind]
        section = obj.get(section_name)
        if isinstance(section, dict) and section.get(field_name) is not None:
            return self._replace(section, field_name)
        return False

    def _patch_op(self, op: Any, secret_context: bool, cleared: set[int]) -> bool:
        """Redact the value of one JSON patch operation (RFC 6902) that writes secret parts of
        a redacted resource (a Secret written anywhere is ``_anywhere``'s)."""
        if not secret_context or not isinstance(op, dict) or op.get("value") is None:
            return False
        value = op["value"]
        path = op.get("path")
        parts = _pointer(path) if isinstance(path, str) else None
        if parts is None:  # nothing tells what this operation writes
            return self._replace(op, "value")
        if not parts:  # the whole object
            if isinstance(value, dict):
                return self._secret(value, cleared)
            return self._replace(op, "value")
        if parts[0] in _CONTENTS:
            return self._contents(op, "value") if len(parts) == 1 else self._replace(op, "value")
        if parts == ["metadata"] and isinstance(value, dict):
            return self._metadata(value)
        if parts == ["metadata", "annotations"] and isinstance(value, dict):
            return self._annotations(value)
        if parts == ["metadata", "annotations", LAST_APPLIED]:
            return self._last_applied(op, "value")
        return False


def _may_hold_secret(text: bytes) -> bool:
    """Whether JSON ``text`` may hold an object of kind Secret or token."""
    return any(name in text for name in _KIND_NAMES) or _LETTER_ESCAPE.search(text) is not None


def _objects_in(body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The body and the objects it lists: List items, Table rows, a WatchEvent's object."""
    yield body
    items = body.get("items")
    for item in items if isinstance(items, list) else ():
        if isinstance(item, dict):
            yield item
    rows = body.get("rows")
    for row in rows if isinstance(rows, list) else ():
        if isinstance(row, dict) and isinstance(row.get("object"), dict):
            yield row["object"]
    if isinstance(body.get("object"), dict):
        yield body["object"]


def _text(mapping: dict[str, Any], key: str) -> str:
    value = mapping.get(key)
    return value if isinstance(value, str) else ""


def _pointer(path: str) -> list[str] | None:
    """The reference tokens of a JSON pointer (RFC 6901), or None when it is not one."""
    if path == "":
        return []
    if not path.startswith("/"):
        return None
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]
