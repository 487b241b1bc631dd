"""The escape of bytes that are not UTF-8 (OPTU-8's convention) is UTF-8 and exactly reversible,
by the module and by the three lines the README gives consumers."""

from __future__ import annotations

import re
from types import SimpleNamespace

from hypothesis import given
from hypothesis import strategies as st

from audit_common.escaped_bytes import escape, unescape
from tests.support.kafka import REPO

# Bytes as Go passes them through, and characters of the escape's own range as sent.
_PIECES = st.one_of(
    st.binary(max_size=8),
    st.sampled_from([b"\xe9\xff\xfe", b"\xed\xa0\x80", "\uef80\uefff".encode(), b"\xee\xbe"]),
    st.text(max_size=4).map(str.encode),
)
BYTES = st.lists(_PIECES, max_size=8).map(b"".join)


def readme_reversal(value: bytes) -> bytes:
    """What the README's snippet in "Consuming the topic" gives for a record of ``value``."""
    readme = (REPO / "README.md").read_text()
    [snippet] = re.findall(r"```python\n(\s*import re\n.*?)```", readme, re.DOTALL)
    scope: dict[str, object] = {"record": SimpleNamespace(value=value)}
    exec("\n".join(line.strip() for line in snippet.splitlines()), scope)
    sent = scope["sent"]
    assert isinstance(sent, bytes)
    return sent


@given(BYTES)
def test_the_escape_is_utf8_and_reversible(raw: bytes) -> None:
    escaped, count = escape(raw)
    escaped.decode()
    if count == 0:
        assert escaped == raw  # UTF-8 as sent: untouched
    else:
        assert unescape(escaped) == raw == readme_reversal(escaped)
        assert len(escaped) - len(raw) == 2 * count  # each byte escaped is three


def test_the_apiserver_s_bytes() -> None:
    escaped, count = escape(b'{"note":"\xe9\xff\xfe"}')
    assert (escaped, count) == ('{"note":"\uefe9\uefff\ueffe"}'.encode(), 3)
    # A character of the range already there is escaped too, byte by byte, once any byte is.
    escaped, count = escape("\uef80".encode() + b"\xff")
    assert (escaped, count) == ("\uefee\uefbe\uef80\uefff".encode(), 4)
    assert escape("\uef80".encode()) == ("\uef80".encode(), 0)
