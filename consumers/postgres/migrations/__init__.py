"""Versioned schema migrations, ``NNNN_name.sql``, applied in order by ``migrate.migrate``.

A released migration is never edited: a schema change is a new file with the next number.
"""
