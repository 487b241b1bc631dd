"""Keeping PostgreSQL passwords out of reprs, logs and messages (pure logic)."""

from __future__ import annotations

import pytest

from consumers.postgres.connection import PostgresConnection, dsn_password, redact_dsn


@pytest.mark.parametrize(
    ("dsn", "shown", "password"),
    [
        (
            "postgresql://audit:s3cr%40t@db:5432/audit",
            "postgresql://audit:***@db:5432/audit",
            "s3cr@t",
        ),
        (
            "postgresql://audit@db/audit?sslmode=verify-full",
            "postgresql://audit@db/audit?sslmode=verify-full",
            None,
        ),
        (
            "postgresql://audit@db/audit?sslmode=require&password=s3cret",
            "postgresql://audit@db/audit?sslmode=require&password=***",
            "s3cret",
        ),
        (
            "postgresql://audit:s3cret@[malformed/audit",
            "postgresql://audit:***@[malformed/audit",
            "s3cret",
        ),
        (
            "host=db user=audit password=s3cret dbname=audit",
            "host=db user=audit password=*** dbname=audit",
            "s3cret",
        ),
        (
            "host=db password = 'two words' dbname=audit",
            "host=db password = *** dbname=audit",
            "two words",
        ),
    ],
)
def test_the_password_is_found_and_redacted_wherever_libpq_takes_it(
    dsn: str, shown: str, password: str | None
) -> None:
    assert redact_dsn(dsn) == shown
    assert dsn_password(dsn) == password


def test_neither_the_dsn_nor_the_password_file_is_in_the_repr() -> None:
    connection = PostgresConnection("postgresql://audit:in-dsn@db/audit", "from-file")
    assert "in-dsn" not in repr(connection) and "from-file" not in repr(connection)
    error = connection.translate(OSError("in-dsn from-file refused"), "connect to")
    assert str(error) == (
        "cannot connect to PostgreSQL at postgresql://audit:***@db/audit: *** *** refused"
    )


def test_a_malformed_dsn_is_a_config_error_without_its_password() -> None:
    connection = PostgresConnection("postgresql://audit:s3cret@[malformed/audit")
    error = connection.translate(ValueError("invalid IPv6 URL"), "connect to")
    assert type(error).__name__ == "ConfigError"
    assert "s3cret" not in str(error)
