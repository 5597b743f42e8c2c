"""`pip install .` (not editable) into a fresh virtualenv gives a package that migrates a fresh database by itself:
the migrations are package data, and nothing of the source tree (or of the dev kit) is needed at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from telemetrypulse import db

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# What a fresh clone has, without anything a local run leaves behind.
NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".devstack",
    "test-output",
    "build",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    ".hypothesis",
)


def run(args: list[str], **kwargs) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.mark.timeout(1200)
async def test_a_regular_install_in_a_fresh_virtualenv_migrates_a_fresh_database(database, tmp_path):
    source = tmp_path / "clone"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "."], cwd=source)
    shutil.rmtree(source)  # the installed package alone from here on

    away = tmp_path / "elsewhere"  # no source tree, no `.devstack/env`, no `.env` to read settings from
    away.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "DATABASE_URL": database}
    out = run([str(venv / "bin" / "telemetrypulse"), "migrate"], cwd=away, env=env)

    versions = [version for version, _ in db.migration_files()]
    assert out.strip() == f"migrations applied: {', '.join(versions)}"
    conn = await asyncpg.connect(database)
    try:
        applied = [r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY 1")]
        assert await conn.fetchval("SELECT to_regclass('telemetry_events') IS NOT NULL")
    finally:
        await conn.close()
    assert applied == versions

    # The wheel holds the runtime only: the dev kit, the tests and the bench stay in the repository.
    probe = "import importlib.util as u; print([m for m in ('devkit', 'tests', 'bench') if u.find_spec(m)])"
    assert run([str(python), "-c", probe], cwd=away, env=env).strip() == "[]"
