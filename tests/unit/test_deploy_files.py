"""Deploy files (docker-compose.yml, Procfile, render.yaml, .env.example, Dockerfile) agree with SPEC §1-§2.

`docker compose config` is not available here, so the YAML is loaded and checked for what compose and
Render rely on: services, health checks, commands, and only variable names the settings know.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML arrives with schemathesis (a test dependency)

from telemetrypulse.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SPEC_VARIABLES = {
    "KAFKA_BOOTSTRAP_SERVERS",
    "KAFKA_SECURITY_PROTOCOL",
    "KAFKA_SASL_MECHANISM",
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA",
    "KAFKA_SSL_CERT",
    "KAFKA_SSL_KEY",
    "DATABASE_URL",
    "TOPIC_EVENTS",
    "TOPIC_ALERTS",
    "TOPIC_DLQ",
    "TOPIC_PARTITIONS",
    "EVENTS_PER_SECOND",
    "WINDOW_GRACE_S",
    "API_KEY",
    "PORT",
    "APP_ID",
    "DATA_DIR",
}
SETTINGS_VARIABLES = {name.upper() for name in Settings.model_fields}
SECRETS = {
    "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD",
    "KAFKA_SSL_CA",
    "KAFKA_SSL_CERT",
    "KAFKA_SSL_KEY",
    "API_KEY",
    "API_KEYS",
    "WEBHOOK_URLS",
    "WEBHOOK_SECRET",
}
LIFECYCLE_VARIABLES = {"API_KEYS", "WEBHOOK_URLS", "WEBHOOK_SECRET", "WEBHOOK_MAX_AGE_S"}  # SPEC §10
WORKER = ["faust", "-A", "telemetrypulse.app", "worker", "-l", "info"]
SINK = ["telemetrypulse", "sink"]
NOTIFIER = ["telemetrypulse", "notify"]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def render() -> dict:
    return yaml.safe_load((ROOT / "render.yaml").read_text())


def procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_settings_know_every_spec_variable():
    assert SPEC_VARIABLES | LIFECYCLE_VARIABLES <= SETTINGS_VARIABLES


def test_compose_has_the_whole_system(compose):
    services = compose["services"]
    assert set(services) == {
        "redpanda",
        "console",
        "postgres",
        "worker",
        "sink",
        "api",
        "simulator",
        "notifier",
    }
    assert "redpanda" in services["redpanda"]["image"] and "console" in services["console"]["image"]
    assert services["postgres"]["image"] == "postgres:15"
    for name in ("redpanda", "postgres"):
        assert services[name]["healthcheck"]["test"], name
        assert any(
            str(v).endswith(("/var/lib/redpanda/data", "/var/lib/postgresql/data"))
            for v in services[name]["volumes"]
        )
    for name in ("worker", "sink", "api", "simulator", "notifier"):
        depends = services[name]["depends_on"]
        assert depends["redpanda"]["condition"] == depends["postgres"]["condition"] == "service_healthy"
    assert services["console"]["environment"]["KAFKA_BROKERS"] == "redpanda:9092"


def test_compose_app_services_run_the_spec_commands_with_known_variables(compose):
    services = compose["services"]
    assert services["worker"]["command"] == WORKER
    assert services["sink"]["command"] == SINK
    assert services["api"]["command"][:2] == ["telemetrypulse", "api"]
    assert "0.0.0.0" in services["api"]["command"] and "8000:8000" in services["api"]["ports"]
    assert services["simulator"]["command"] == ["telemetrypulse", "simulate"]
    assert services["notifier"]["command"] == NOTIFIER
    assert {"WEBHOOK_URLS", "WEBHOOK_SECRET", "WEBHOOK_MAX_AGE_S"} <= set(services["notifier"]["environment"])
    assert "API_KEYS" in services["api"]["environment"]
    for name in ("worker", "sink", "api", "simulator", "notifier"):
        env = services[name]["environment"]
        assert set(env) <= SETTINGS_VARIABLES, set(env) - SETTINGS_VARIABLES
        assert {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL", "APP_ID"} <= set(env)
        assert env["KAFKA_BOOTSTRAP_SERVERS"].split(":")[0] == "redpanda"
        assert "redpanda:9092" in " ".join(services["redpanda"]["command"])


def test_compose_database_url_matches_the_postgres_service(compose):
    url = urlsplit(compose["services"]["api"]["environment"]["DATABASE_URL"])
    pg = compose["services"]["postgres"]["environment"]
    assert (url.hostname, url.port) == ("postgres", 5432)
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg["POSTGRES_USER"],
        pg["POSTGRES_PASSWORD"],
        pg["POSTGRES_DB"],
    )


def test_compose_worker_state_is_on_a_volume(compose):
    worker = compose["services"]["worker"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in worker["volumes"]}
    data_dir = worker["environment"]["DATA_DIR"]
    assert any(data_dir == m or data_dir.startswith(m + "/") for m in mounts)
    assert all(source in compose["volumes"] for source in mounts.values())


def test_procfile(compose):
    processes = procfile()
    assert set(processes) == {"web", "worker", "sink", "simulator", "notifier"}
    web = shlex.split(processes["web"])
    assert web[:2] == ["telemetrypulse", "api"] and "$PORT" in web and "0.0.0.0" in web
    assert shlex.split(processes["worker"]) == WORKER
    assert shlex.split(processes["sink"]) == SINK
    assert shlex.split(processes["simulator"]) == ["telemetrypulse", "simulate"]
    assert shlex.split(processes["notifier"]) == NOTIFIER


def test_render_blueprint(render):
    services = {s["name"]: s for s in render["services"]}
    assert sorted(s["type"] for s in services.values()) == ["web", "worker", "worker", "worker", "worker"]
    web = next(s for s in services.values() if s["type"] == "web")
    assert shlex.split(web["startCommand"]) == shlex.split(procfile()["web"])
    assert web["healthCheckPath"] == "/health/live"
    starts = {shlex.join(shlex.split(s["startCommand"])) for s in services.values()}
    assert {shlex.join(WORKER), shlex.join(SINK), "telemetrypulse simulate"} <= starts
    sink = next(s for s in services.values() if shlex.split(s["startCommand"]) == SINK)
    assert {e.get("key") for e in sink["envVars"]} >= {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS"}
    assert {shlex.join(WORKER), "telemetrypulse simulate", shlex.join(NOTIFIER)} <= starts
    notifier = next(s for s in services.values() if shlex.split(s["startCommand"]) == NOTIFIER)
    notifier_keys = {e.get("key") for e in notifier["envVars"]}
    assert {"DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "WEBHOOK_URLS", "WEBHOOK_SECRET"} <= notifier_keys
    assert "API_KEYS" in {e.get("key") for e in web["envVars"]}
    group_keys = {e["key"] for g in render["envVarGroups"] for e in g["envVars"]}
    assert group_keys - {"PYTHON_VERSION"} <= SETTINGS_VARIABLES
    databases = {d["name"] for d in render["databases"]}
    for service in services.values():
        for env in service["envVars"]:
            if "fromGroup" in env:
                assert env["fromGroup"] in {g["name"] for g in render["envVarGroups"]}
                continue
            assert env["key"] in SETTINGS_VARIABLES, env["key"]
            if env["key"] in SECRETS:
                assert env.get("sync") is False and "value" not in env, env
            if env["key"] == "DATABASE_URL":
                assert env["fromDatabase"]["name"] in databases
    worker = next(s for s in services.values() if s["startCommand"].startswith("faust"))
    data_dir = next(e["value"] for e in worker["envVars"] if e.get("key") == "DATA_DIR")
    assert data_dir.startswith(worker["disk"]["mountPath"])


def test_env_example_documents_every_variable():
    text = (ROOT / ".env.example").read_text()
    named = set(re.findall(r"(?m)^#? ?([A-Z][A-Z0-9_]*)=", text))
    assert named >= SPEC_VARIABLES | LIFECYCLE_VARIABLES, (SPEC_VARIABLES | LIFECYCLE_VARIABLES) - named
    assert named <= SETTINGS_VARIABLES, named - SETTINGS_VARIABLES


def test_dockerfile_installs_the_package():
    text = (ROOT / "Dockerfile").read_text()
    assert text.splitlines()[1 if text.startswith("#") else 0].startswith("FROM python:3.11-slim")
    assert "COPY . ." in text
    # Not editable (`pip install -e`): the image runs the installed package, migrations included.
    installs = re.findall(r"pip install\s+(\S+)", text)
    assert installs == ["."], installs
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".devstack", ".git", "devkit", "tests", "bench"} <= set(ignored)


def test_make_run_supervises_every_process():
    from devkit.supervisor import system_commands

    commands = {name: [Path(cmd[0]).name, *cmd[1:]] for name, cmd in system_commands().items()}
    assert commands == {
        "worker": WORKER,
        "sink": SINK,
        "api": ["telemetrypulse", "api"],
        "notifier": NOTIFIER,
        "simulator": ["telemetrypulse", "simulate"],
    }
    assert next(iter(commands)) == "worker"  # stopped last: it drains


def test_commands_exist():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["telemetrypulse"] == "telemetrypulse.cli:main"
    assert (ROOT / "telemetrypulse" / "app.py").is_file()
    # Procfile, compose and Render pass --host/--port: the API command must accept them.
    usage = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.cli", "api", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert usage.returncode == 0 and "--host" in usage.stdout and "--port" in usage.stdout
    sink = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.cli", "sink", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert sink.returncode == 0 and "telemetrypulse sink" in sink.stdout
    notify = subprocess.run(
        [sys.executable, "-m", "telemetrypulse.cli", "notify", "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert notify.returncode == 0 and "webhook" in notify.stdout.lower()
