"""The object-storage archive: its layout, the store, ``archive verify`` and ``replay``.

The sink that writes it is ``consumers.sinks.archive``; this package holds what the sink and
the two commands share.
"""
