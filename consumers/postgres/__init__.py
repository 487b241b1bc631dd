"""PostgreSQL as the queryable audit store: connection settings, schema migrations, rows,
retention; used by ``--sink postgres`` (``consumers.sinks.postgres``) and ``audit-consumer query``.
"""
