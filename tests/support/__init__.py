"""Helpers shared by the test packages: ports, the broker, processes, audit events."""
