"""audit-consumer: consumer groups that read the relay's topic and write audit events to sinks."""
