"""The kit's own error (the runtime's are in telemetrypulse.exceptions)."""


class StackError(Exception):
    """The local Kafka or PostgreSQL could not be started or stopped; the message says why, with the log's tail."""
