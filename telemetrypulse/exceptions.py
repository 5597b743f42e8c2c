"""The project's exceptions: one base, one-line subclasses."""


class TelemetryPulseError(Exception):
    """Base of every error this package raises on purpose."""


class SettingsError(TelemetryPulseError, ValueError):
    """A setting is missing or wrong; the message is one line that names it."""


class MigrationError(TelemetryPulseError):
    """A migration file failed to apply."""


class SinkError(TelemetryPulseError):
    """A PostgreSQL sink could not write a batch (retried by the caller)."""


class OutboxError(TelemetryPulseError):
    """The notifier could not read or write its deliveries in PostgreSQL (retried by the caller)."""
