"""All configuration, read once from the environment (then `.env`, then `.devstack/env`) and validated.

A wrong or missing value stops the program at start with one line naming the variable (`SettingsError`).
"""

from __future__ import annotations

import os
import re
import ssl
import tempfile
from functools import cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from telemetrypulse.access import KeyRing, parse_api_keys
from telemetrypulse.exceptions import SettingsError
from telemetrypulse.names import InternalNames, internal_names
from telemetrypulse.webhooks import parse_webhook_urls

NAME_PATTERN = r"^[A-Za-z0-9._-]{1,200}$"
# `.devstack/env` is written by `make up`; `.env` is the user's own and wins over it; real
# environment variables win over both (pydantic-settings: later files override earlier ones).
ENV_FILES = (".devstack/env", ".env")


class Settings(BaseSettings):
    # An empty value means unset: compose files and copies of `.env.example` pass `NAME=` for options left blank.
    model_config = SettingsConfigDict(
        env_file=ENV_FILES, extra="ignore", case_sensitive=False, env_ignore_empty=True
    )

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca: SecretStr | None = None
    kafka_ssl_cert: SecretStr | None = None
    kafka_ssl_key: SecretStr | None = None

    database_url: SecretStr | None = None

    topic_events: str = Field("telemetry.events", pattern=NAME_PATTERN)
    topic_alerts: str = Field("telemetry.alerts", pattern=NAME_PATTERN)
    topic_dlq: str = Field("telemetry.dlq", pattern=NAME_PATTERN)
    topic_partitions: int = Field(6, ge=1, le=1000)
    topic_replication_factor: int = Field(1, ge=1, le=10)

    events_per_second: float = Field(5.0, gt=0)
    window_grace_s: int = Field(300, ge=0, le=7 * 24 * 3600)
    # SPEC §9: a (device, sensor) is stale once its partition's watermark passes its last reading by more; 0 = off.
    stale_after_s: int = Field(900, ge=0, le=30 * 24 * 3600)

    api_key: SecretStr | None = None
    # `name:secret:scope[+scope…]`, comma-separated (SPEC §10); parsed by access.parse_api_keys.
    api_keys: SecretStr | None = None
    port: int = Field(8000, ge=1, le=65535)
    app_id: str = Field("telemetrypulse", pattern=r"^[A-Za-z0-9._-]{1,100}$")
    data_dir: Path = Path(".devstack/worker")
    worker_web_port: int = Field(6066, ge=0, le=65535)  # Faust's web server (/metrics); 0 disables it
    # How often each partition's state is snapshotted to the table (also at revocation and shutdown); a crash
    # replays at most this much of the events topic into the state.
    snapshot_interval_s: float = Field(30.0, gt=0, le=3600)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # The PostgreSQL sink process (`telemetrypulse sink`).
    sink_web_port: int = Field(6067, ge=0, le=65535)  # its /metrics on 127.0.0.1; 0 disables it
    # Change records per transaction, at most: live records are small (one per worker slice), and more of them per
    # transaction means fewer statements and more rows coalesced; memory is bounded by the fetch size anyway.
    sink_batch_max_records: int = Field(1000, ge=1, le=100_000)

    # Retention (SPEC §11), enforced by the worker at start and hourly: days of raw readings (whole daily partitions)
    # and of 5- and 15-minute windows to keep; 0 keeps them forever. Hourly and daily windows are always kept.
    raw_retention_days: int = Field(0, ge=0, le=36_500)
    window_5m_retention_days: int = Field(0, ge=0, le=36_500)
    window_15m_retention_days: int = Field(0, ge=0, le=36_500)

    # The webhook notifier (`telemetrypulse notify`, SPEC §10). URLs may carry a receiver's token: secret.
    webhook_urls: SecretStr | None = None
    webhook_secret: SecretStr | None = None
    webhook_max_age_s: int = Field(86400, ge=1, le=30 * 86400)
    webhook_timeout_s: float = Field(10.0, gt=0, le=300)
    webhook_poll_s: float = Field(5.0, gt=0, le=300)  # how soon a `PUT /webhooks/{name}` reaches the notifier
    notifier_web_port: int = Field(6068, ge=0, le=65535)  # the notifier's /metrics; 0 disables it

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("kafka_sasl_mechanism", "kafka_sasl_username", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("kafka_ssl_ca", "kafka_ssl_cert", "kafka_ssl_key", mode="before")
    @classmethod
    def _pem_newlines(cls, value: Any) -> Any:
        # Some platforms store a multi-line secret as one line with literal "\n".
        if isinstance(value, str) and "\\n" in value and "\n" not in value.strip():
            return value.replace("\\n", "\n")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _host_ports(cls, value: str) -> str:
        servers = [s.strip() for s in value.split(",") if s.strip()]
        if not servers or not all(re.fullmatch(r"[^\s:]+:\d{1,5}", s) for s in servers):
            raise ValueError("expected host:port[,host:port…]")
        return ",".join(servers)

    @field_validator("database_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        parts = urlsplit(value.get_secret_value())
        if parts.scheme not in ("postgresql", "postgres") or not parts.hostname:
            raise ValueError("expected postgresql://user:password@host:port/dbname")
        return value

    @field_validator("api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parse_api_keys(value.get_secret_value())
        except ValueError as e:
            raise SettingsError(f"API_KEYS: {e}") from None
        return value

    @field_validator("webhook_urls")
    @classmethod
    def _webhook_urls(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        try:
            parse_webhook_urls(value.get_secret_value())
        except ValueError as e:
            raise SettingsError(f"WEBHOOK_URLS: {e}") from None
        return value

    @model_validator(mode="after")
    def _keys_distinct(self) -> Settings:
        try:
            self.key_ring()
        except ValueError as e:
            raise SettingsError(str(e)) from None
        return self

    @model_validator(mode="after")
    def _kafka_security_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL"):
            for name in ("kafka_sasl_mechanism", "kafka_sasl_username", "kafka_sasl_password"):
                if getattr(self, name) is None:
                    raise SettingsError(
                        f"{name.upper()}: required when KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}"
                    )
        if (self.kafka_ssl_cert is None) != (self.kafka_ssl_key is None):
            raise SettingsError("KAFKA_SSL_CERT and KAFKA_SSL_KEY: give both (client certificate) or neither")
        for name in ("kafka_ssl_ca", "kafka_ssl_cert", "kafka_ssl_key"):
            pem = getattr(self, name)
            if pem is not None and "-----BEGIN" not in pem.get_secret_value():
                raise SettingsError(f"{name.upper()}: expected PEM contents (-----BEGIN …), not a path")
        return self

    @property
    def dsn(self) -> str:
        """The PostgreSQL URL; a command that needs the database fails here, naming the variable."""
        if self.database_url is None:
            raise SettingsError("DATABASE_URL: not set (run `make up`, or set it to postgresql://…)")
        return self.database_url.get_secret_value()

    def key_ring(self) -> KeyRing:
        """The API keys of `API_KEYS` and `API_KEY` (validated at start, so this does not fail later)."""
        return KeyRing.from_secrets(
            self.api_keys.get_secret_value() if self.api_keys is not None else None,
            self.api_key.get_secret_value() if self.api_key is not None else None,
        )

    def webhook_receivers(self) -> list[str]:
        """The URLs of `WEBHOOK_URLS`, in order, without repeats."""
        return (
            parse_webhook_urls(self.webhook_urls.get_secret_value()) if self.webhook_urls is not None else []
        )

    @property
    def names(self) -> InternalNames:
        """The internal topic and group names of this deployment (derived from APP_ID)."""
        return internal_names(self.app_id)

    @property
    def topic_changes(self) -> str:
        """The worker's change records for the sink (internal: named by APP_ID)."""
        return self.names.changes_topic

    @property
    def topic_rules(self) -> str:
        """The alert rule versions (SPEC §9): internal, named by APP_ID — a deployment's rules belong with its
        database's rule history, so two deployments sharing a cluster must not share them."""
        return self.names.rules_topic

    @property
    def sink_group(self) -> str:
        return self.names.sink_group

    @property
    def uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def database_ssl(self) -> str | None:
        """asyncpg's `ssl` argument from the URL's `sslmode` (asyncpg also reads it; this keeps it explicit)."""
        modes = parse_qs(urlsplit(self.dsn).query).get("sslmode")
        return modes[-1] if modes else None


def _is_secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    return info is None or "SecretStr" in repr(info.annotation)


def _describe(error: dict[str, Any]) -> str:
    field = ".".join(str(part) for part in error.get("loc", ())) or "settings"
    got = error.get("input")
    # Secrets (a DATABASE_URL holds a password) are named, never echoed.
    shown = "" if isinstance(got, dict) or _is_secret(field) else f" (got {got!r})"
    return f"{field.upper()}: {error.get('msg', 'invalid')}{shown}"


@cache
def get_settings() -> Settings:
    """The one Settings instance; raises SettingsError with a single line naming the bad variable."""
    try:
        return Settings()
    except ValidationError as e:
        first = e.errors()[0]
        cause = first.get("ctx", {}).get("error")
        if isinstance(cause, SettingsError):
            raise SettingsError(str(cause)) from None
        raise SettingsError(_describe(first)) from None


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """An SSL context from PEM *contents*.

    `ssl` can load a CA from memory but a client certificate only from files, so cert and key are
    written to 0600 temporary files, loaded, and removed at once.
    """
    if not settings.uses_tls:
        return None
    # A given CA is the only one trusted (a managed service's own CA); without one, the system's CAs.
    ca = settings.kafka_ssl_ca.get_secret_value() if settings.kafka_ssl_ca is not None else None
    try:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca)
    except ssl.SSLError as e:
        raise SettingsError(f"KAFKA_SSL_CA: cannot load the CA certificate: {e}") from None
    if settings.kafka_ssl_cert is not None and settings.kafka_ssl_key is not None:
        with tempfile.TemporaryDirectory(prefix="telemetrypulse-tls-") as folder:
            paths = {}
            for name, secret in (("cert.pem", settings.kafka_ssl_cert), ("key.pem", settings.kafka_ssl_key)):
                path = Path(folder) / name
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "w") as f:
                    f.write(secret.get_secret_value())
                paths[name] = str(path)
            try:
                # The password callback keeps OpenSSL from prompting on the terminal for an encrypted key.
                context.load_cert_chain(paths["cert.pem"], paths["key.pem"], password=lambda: "")
            except ssl.SSLError as e:
                raise SettingsError(
                    "KAFKA_SSL_CERT/KAFKA_SSL_KEY: cannot load the client certificate "
                    f"(mismatched pair, or an encrypted key, which is not supported): {e}"
                ) from None
    return context


def aiokafka_options(settings: Settings) -> dict[str, Any]:
    """Connection options shared by every aiokafka client (producer, consumer, admin)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "security_protocol": settings.kafka_security_protocol,
    }
    context = kafka_ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.kafka_security_protocol.startswith("SASL"):
        assert settings.kafka_sasl_password is not None
        options.update(
            sasl_mechanism=settings.kafka_sasl_mechanism,
            sasl_plain_username=settings.kafka_sasl_username,
            sasl_plain_password=settings.kafka_sasl_password.get_secret_value(),
        )
    return options
