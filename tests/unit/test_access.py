"""Scoped API keys: the `API_KEYS` format, which scopes are open, constant-time lookup, and a bad value
stopping the API and the notifier at start with one line that names the variable and never the secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from devkit.paths import ROOT
from telemetrypulse.access import KeyRing, Scope, parse_api_keys
from telemetrypulse.exceptions import SettingsError
from telemetrypulse.settings import get_settings
from tests.unit.test_settings import clean_env  # noqa: F401 - autouse: no variable of the checkout leaks in


def test_parse_names_secrets_and_scopes():
    keys = parse_api_keys(
        " dash:s3cret-read:read , ops:op:secret:with:colons:operate+READ,root:r00t-r00t:admin"
    )
    assert keys == [
        ("dash", "s3cret-read", frozenset({Scope.read})),
        ("ops", "op:secret:with:colons", frozenset({Scope.operate, Scope.read})),
        ("root", "r00t-r00t", frozenset({Scope.admin})),
    ]


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("dash", "entry 1 is not name:secret:scope"),
        ("dash:s3cret-read", "entry 1 is not name:secret:scope"),
        ("dash:s3cret-read:read,", "entry 2 is empty"),
        ("da sh:s3cret-read:read", "entry 1: a key name"),
        ("dash:s3cret-read:write", "unknown scope 'write'"),
        ("dash:hunter2:read", "shorter than 8"),
        ("dash:s3cret read:read", "printable ASCII"),
        ("dash:s3cret-read:read,dash:s3cret-other:read", "used twice"),
        ("a:s3cret-same:read,b:s3cret-same:admin", "the same secret as 'a'"),
    ],
)
def test_bad_api_keys_fail_with_one_line_naming_the_variable(monkeypatch, value, says):
    monkeypatch.setenv("API_KEYS", value)
    with pytest.raises(SettingsError) as caught:
        get_settings()
    message = str(caught.value)
    assert message.startswith("API_KEYS: ") and says in message and "\n" not in message
    for secret in ("s3cret-read", "s3cret-other", "s3cret-same", "hunter2", "s3cret read"):
        assert secret not in message


def test_api_key_sharing_a_secret_with_api_keys_is_refused(monkeypatch):
    monkeypatch.setenv("API_KEYS", "dash:s3cret-read:read")
    monkeypatch.setenv("API_KEY", "s3cret-read")
    with pytest.raises(SettingsError, match=r"^API_KEY has the same secret as key 'dash'") as caught:
        get_settings()
    assert "s3cret-read" not in str(caught.value).replace("'dash'", "")


def test_open_scopes_follow_the_configured_keys():
    assert [KeyRing.from_secrets(None, None).protects(s) for s in Scope] == [False, False, True, True]
    # API_KEY alone keeps meaning what it meant: ingest needs it, reads stay open.
    legacy = KeyRing.from_secrets(None, "legacy-key")
    assert [legacy.protects(s) for s in Scope] == [False, True, True, True]
    # An admin key does not close reads or ingest: only a key that names the scope does.
    admin_only = KeyRing.from_secrets("root:r00t-r00t:admin", None)
    assert [admin_only.protects(s) for s in Scope] == [False, False, True, True]
    with_reader = KeyRing.from_secrets("dash:s3cret-read:read", None)
    assert with_reader.protects(Scope.read) and not with_reader.protects(Scope.ingest)


def test_authenticate_and_scopes():
    ring = KeyRing.from_secrets("dash:s3cret-read:read,root:r00t-r00t:admin", "legacy-key")
    dash, root, legacy = (
        ring.authenticate("s3cret-read"),
        ring.authenticate("r00t-r00t"),
        ring.authenticate("legacy-key"),
    )
    assert (dash.name, root.name, legacy.name) == ("dash", "root", "API_KEY")
    assert dash.allows(Scope.read) and not dash.allows(Scope.operate)
    assert all(root.allows(s) for s in Scope)  # admin implies every scope
    assert legacy.allows(Scope.ingest) and not legacy.allows(Scope.read)
    for wrong in ("s3cret-rea", "s3cret-read ", "", "S3CRET-READ", "r00t-r00t\x00"):
        assert ring.authenticate(wrong) is None
    assert "s3cret" not in repr(ring.keys) and "r00t" not in repr(ring.keys)


def test_secrets_are_kept_as_digests_only():
    ring = KeyRing.from_secrets("dash:s3cret-read:read", None)
    assert all(b"s3cret-read" not in key.digest for key in ring.keys)
    assert "s3cret-read" not in repr(vars(ring) if hasattr(ring, "__dict__") else ring)


def _start(command: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "telemetrypulse.cli", command],
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": "postgresql://u:p@127.0.0.1:1/x", **env},
        cwd=ROOT / "tests",  # no .env / .devstack/env of the checkout
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_bad_api_keys_stop_the_api_at_start_with_one_line():
    done = _start("api", API_KEYS="dash:hunter2-secret:reed")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "API_KEYS" in lines[0] and "unknown scope 'reed'" in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_notifier_needs_a_secret_to_sign_with():
    done = _start("notify", WEBHOOK_URLS="https://hooks.example.com/x?token=hunter2")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "WEBHOOK_SECRET" in lines[0], done.stderr
    assert "hunter2" not in done.stderr + done.stdout


def test_bad_webhook_urls_are_named_without_their_tokens(monkeypatch):
    monkeypatch.setenv("WEBHOOK_URLS", "https://ok.example.com/a,ftp://files.example.com/hook?token=hunter2")
    with pytest.raises(SettingsError) as caught:
        get_settings()
    assert str(caught.value).startswith("WEBHOOK_URLS: entry 2: expected an http:// or https:// URL")
    assert "hunter2" not in str(caught.value)
