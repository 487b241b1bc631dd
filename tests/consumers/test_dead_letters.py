"""Dead letters too large for their topic are cut, as the relay cuts its own."""

from __future__ import annotations

import hashlib

from consumers.dead_letters import Letter, cut

LETTER = Letter(b"v" * 5000, b"key", [("cluster", b"c")], None, "k8s-audit", 2, 41, "refused")


def test_a_letter_that_fits_is_sent_as_it_is() -> None:
    assert cut(LETTER, 1 << 20) is LETTER


def test_a_letter_too_large_keeps_its_first_bytes_its_length_and_its_digest() -> None:
    small = cut(LETTER, 2000)
    headers = dict(small.headers)
    assert small.value is not None and 0 < len(small.value) < 2000
    assert LETTER.value is not None and LETTER.value.startswith(small.value)
    assert headers["truncated-from-bytes"] == b"5000"
    assert headers["digest"] == hashlib.sha256(LETTER.value).hexdigest().encode()
    assert (small.reason, small.topic, small.partition, small.offset) == (
        "refused",
        "k8s-audit",
        2,
        41,
    )


def test_a_limit_of_nothing_keeps_the_headers_only() -> None:
    assert cut(LETTER, 0).value == b""
