"""Settings: every wrong value fails with one line naming its variable; Kafka TLS/SASL from PEM contents."""

from __future__ import annotations

import ssl
import subprocess
import tempfile
from pathlib import Path

import pytest

from telemetrypulse import settings as settings_module
from telemetrypulse.exceptions import SettingsError
from telemetrypulse.settings import Settings, aiokafka_options, get_settings


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """No real variable and no `.env`/`.devstack/env` of the checkout leaks in: empty cwd, all fields unset."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def settings_error(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert "\n" not in message, message
    return message


def test_defaults_match_the_spec():
    s = get_settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:9092"
    assert s.kafka_security_protocol == "PLAINTEXT"
    assert (s.topic_events, s.topic_alerts, s.topic_dlq) == (
        "telemetry.events",
        "telemetry.alerts",
        "telemetry.dlq",
    )
    assert (s.topic_partitions, s.events_per_second, s.window_grace_s) == (6, 5.0, 300)
    assert s.app_id == "telemetrypulse"
    assert s.api_key is None and s.database_url is None
    assert aiokafka_options(s) == {"bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "a:9092,b"}, "KAFKA_BOOTSTRAP_SERVERS"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"}, "KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL"}, "KAFKA_SASL_MECHANISM"),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
                "KAFKA_SASL_MECHANISM": "PLAIN",
                "KAFKA_SASL_PASSWORD": "p",
            },
            "KAFKA_SASL_USERNAME",
        ),
        (
            {
                "KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
                "KAFKA_SASL_MECHANISM": "scram-sha-256",
                "KAFKA_SASL_USERNAME": "u",
            },
            "KAFKA_SASL_PASSWORD",
        ),
        ({"KAFKA_SSL_CA": "/etc/ssl/ca.pem"}, "KAFKA_SSL_CA"),
        ({"KAFKA_SSL_CERT": "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"}, "KAFKA_SSL_KEY"),
        ({"DATABASE_URL": "mysql://u:p@db/x"}, "DATABASE_URL"),
        ({"DATABASE_URL": "postgresql:///nohost"}, "DATABASE_URL"),
        ({"TOPIC_EVENTS": "telemetry events"}, "TOPIC_EVENTS"),
        ({"TOPIC_ALERTS": "a/b"}, "TOPIC_ALERTS"),
        ({"TOPIC_DLQ": "x" * 300}, "TOPIC_DLQ"),
        ({"TOPIC_PARTITIONS": "0"}, "TOPIC_PARTITIONS"),
        ({"TOPIC_PARTITIONS": "six"}, "TOPIC_PARTITIONS"),
        ({"EVENTS_PER_SECOND": "0"}, "EVENTS_PER_SECOND"),
        ({"EVENTS_PER_SECOND": "fast"}, "EVENTS_PER_SECOND"),
        ({"WINDOW_GRACE_S": "-1"}, "WINDOW_GRACE_S"),
        ({"PORT": "70000"}, "PORT"),
        ({"PORT": "http"}, "PORT"),
        ({"APP_ID": "my app"}, "APP_ID"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL"),
        ({"WORKER_WEB_PORT": "-5"}, "WORKER_WEB_PORT"),
        ({"SINK_WEB_PORT": "70000"}, "SINK_WEB_PORT"),
        ({"SINK_BATCH_MAX_RECORDS": "0"}, "SINK_BATCH_MAX_RECORDS"),
    ],
)
def test_each_bad_setting_fails_with_one_line_naming_it(monkeypatch, env, named):
    assert named in settings_error(monkeypatch, **env).partition(":")[0]


def test_secrets_are_never_echoed(monkeypatch):
    message = settings_error(monkeypatch, DATABASE_URL="mysql://user:hunter2@db/x")
    assert message.startswith("DATABASE_URL") and "hunter2" not in message
    get_settings.cache_clear()
    monkeypatch.delenv("DATABASE_URL")
    message = settings_error(monkeypatch, KAFKA_SSL_KEY="hunter2-not-pem", KAFKA_SSL_CERT="hunter3-not-pem")
    assert "hunter" not in message


def test_missing_database_url_is_named_when_needed():
    with pytest.raises(SettingsError, match=r"^DATABASE_URL: not set"):
        _ = get_settings().dsn


def test_empty_values_mean_unset(monkeypatch):
    # docker compose and `.env.example` copies pass empty strings for options left blank.
    for name in (
        "KAFKA_SSL_CA",
        "KAFKA_SSL_CERT",
        "KAFKA_SSL_KEY",
        "KAFKA_SASL_MECHANISM",
        "API_KEY",
        "DATABASE_URL",
    ):
        monkeypatch.setenv(name, "")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "")
    s = get_settings()
    assert (s.kafka_ssl_ca, s.kafka_ssl_cert, s.kafka_ssl_key, s.api_key, s.database_url) == (None,) * 5
    assert s.kafka_sasl_mechanism is None and s.kafka_sasl_password is None


def test_environment_beats_dotenv_beats_devstack_env(tmp_path, monkeypatch):
    (tmp_path / ".devstack").mkdir()
    (tmp_path / ".devstack" / "env").write_text(
        "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:19092\nDATABASE_URL=postgresql://a:b@127.0.0.1:1/devstack\n"
    )
    s = get_settings()
    assert s.kafka_bootstrap_servers == "127.0.0.1:19092" and s.dsn.endswith("/devstack")
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://a:b@127.0.0.1:1/dotenv\n")
    get_settings.cache_clear()
    assert get_settings().dsn.endswith("/dotenv")
    monkeypatch.setenv("DATABASE_URL", "postgresql://a:b@127.0.0.1:1/real")
    get_settings.cache_clear()
    assert get_settings().dsn.endswith("/real")


def test_database_sslmode_is_read_from_the_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:p@db.example.com:5432/x?sslmode=require")
    assert get_settings().database_ssl() == "require"


# --------------------------------------------------------------------------------------------- TLS / SASL


@pytest.fixture(scope="module")
def pems(tmp_path_factory) -> dict[str, str]:
    """A throwaway CA and a client certificate it signed, plus the key encrypted with a passphrase."""
    folder = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=test-ca")
    openssl("req", *ec, "-keyout", "client.key", "-out", "client.csr", "-subj", "/CN=client")
    signed_by_ca = ("-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial")
    openssl("x509", "-req", "-in", "client.csr", *signed_by_ca, "-out", "client.pem", "-days", "2")
    openssl("ec", "-in", "client.key", "-out", "encrypted.key", "-aes256", "-passout", "pass:secret")
    return {
        name: (folder / name).read_text()
        for name in ("ca.pem", "ca.key", "client.pem", "client.key", "encrypted.key")
    }


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """Where tempfile puts things during the test, to prove the key copy is removed."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def tls_env(monkeypatch, pems, *, key: str = "client.key", **extra: str) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CA", pems["ca.pem"])
    monkeypatch.setenv("KAFKA_SSL_CERT", pems["client.pem"])
    monkeypatch.setenv("KAFKA_SSL_KEY", pems[key])
    for name, value in extra.items():
        monkeypatch.setenv(name, value)


def test_ssl_context_from_pem_contents_leaves_no_key_on_disk(monkeypatch, pems, private_tmp):
    tls_env(monkeypatch, pems)
    options = aiokafka_options(get_settings())
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert options["security_protocol"] == "SSL" and "sasl_mechanism" not in options
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "test-ca"),),)]
    assert list(private_tmp.iterdir()) == []


def test_sasl_ssl_options(monkeypatch, pems, private_tmp):
    tls_env(
        monkeypatch,
        pems,
        KAFKA_SECURITY_PROTOCOL="SASL_SSL",
        KAFKA_SASL_MECHANISM="SCRAM-SHA-512",
        KAFKA_SASL_USERNAME="svc",
        KAFKA_SASL_PASSWORD="pw",
    )
    options = aiokafka_options(get_settings())
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["security_protocol"] == "SASL_SSL"
    assert (options["sasl_mechanism"], options["sasl_plain_username"], options["sasl_plain_password"]) == (
        "SCRAM-SHA-512",
        "svc",
        "pw",
    )
    assert list(private_tmp.iterdir()) == []


def test_sasl_plaintext_has_no_ssl_context(monkeypatch):
    for name, value in {
        "KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "KAFKA_SASL_MECHANISM": "PLAIN",
        "KAFKA_SASL_USERNAME": "u",
        "KAFKA_SASL_PASSWORD": "p",
    }.items():
        monkeypatch.setenv(name, value)
    options = aiokafka_options(get_settings())
    assert "ssl_context" not in options and options["sasl_mechanism"] == "PLAIN"


def test_ca_only_tls(monkeypatch, pems):
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SSL")
    monkeypatch.setenv("KAFKA_SSL_CA", pems["ca.pem"])
    assert isinstance(aiokafka_options(get_settings())["ssl_context"], ssl.SSLContext)


def test_escaped_newlines_in_pem_are_accepted(monkeypatch, pems, private_tmp):
    # Some platforms store a multi-line secret as one line with literal "\n".
    tls_env(monkeypatch, pems)
    for name, pem in (
        ("KAFKA_SSL_CA", "ca.pem"),
        ("KAFKA_SSL_CERT", "client.pem"),
        ("KAFKA_SSL_KEY", "client.key"),
    ):
        monkeypatch.setenv(name, pems[pem].replace("\n", "\\n"))
    assert isinstance(aiokafka_options(get_settings())["ssl_context"], ssl.SSLContext)
    assert list(private_tmp.iterdir()) == []


@pytest.mark.parametrize(
    ("case", "named"),
    [("mismatched key", "KAFKA_SSL_CERT"), ("encrypted key", "KAFKA_SSL_KEY"), ("broken ca", "KAFKA_SSL_CA")],
)
def test_unloadable_pem_fails_with_one_line(monkeypatch, pems, private_tmp, case, named):
    if case == "mismatched key":
        tls_env(monkeypatch, pems, key="ca.key")
    elif case == "encrypted key":
        # Must fail, not block on OpenSSL's interactive passphrase prompt.
        tls_env(monkeypatch, pems, key="encrypted.key")
    else:
        tls_env(
            monkeypatch,
            pems,
            KAFKA_SSL_CA="-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
        )
    with pytest.raises(SettingsError) as caught:
        aiokafka_options(get_settings())
    assert named in str(caught.value) and "\n" not in str(caught.value)
    assert "BEGIN" not in str(caught.value)
    assert list(private_tmp.iterdir()) == []


def test_module_reads_devstack_env_first():
    # Documented order: later files win, so the user's `.env` overrides what `make up` wrote.
    assert settings_module.ENV_FILES == (".devstack/env", ".env")
