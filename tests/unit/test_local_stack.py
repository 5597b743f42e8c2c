"""The local stack without services: configs, port choice, state parsing, and that `down` leaves foreign processes
alone."""

from __future__ import annotations

import json
import re
import socket
import subprocess
from pathlib import Path

import pytest

from devkit import local_kafka, local_postgres, ports
from devkit.local_stack import LocalStack
from devkit.paths import ROOT


def properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_kafka_properties_single_node_kraft_on_loopback(tmp_path):
    props = properties(local_kafka.kafka_properties(port=19092, controller_port=19093, data_dir=tmp_path))
    assert props["process.roles"] == "broker,controller" and props["node.id"] == "1"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert props["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:19093"
    assert props["log.dirs"] == str(tmp_path)
    for key, value in {
        "num.partitions": "6",
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": "true",
        "log.retention.hours": "24",
        "log.segment.bytes": str(64 << 20),
    }.items():
        assert props[key] == value, key
    assert int(props["message.max.bytes"]) >= 8_000_000


def test_postgres_conf_keeps_commits_durable(tmp_path):
    conf = local_postgres.postgres_conf(port=55432, socket_dir=tmp_path)
    assert "synchronous_commit = on" in conf and "fsync = off" in conf
    assert "listen_addresses = '127.0.0.1'" in conf and f"unix_socket_directories = '{tmp_path}'" in conf
    assert "max_connections = 300" in conf


def test_cluster_id_looks_like_kafka_storage_random_uuid():
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", local_kafka.new_cluster_id())


def test_busy_preferred_port_falls_back_outside_the_ephemeral_range():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        assert not ports.port_free(taken)
        port = ports.pick_port(taken, seed="some clone")
        assert port != taken and ports.port_free(port)
        assert port in ports.fallback_range()
        assert ports.pick_port(taken, seed="some clone") == port  # stable for one clone
        assert ports.pick_port(None, seed="some clone", taken=[port]) != port


def test_env_file_parsing(tmp_path):
    stack = LocalStack(tmp_path)
    stack.dir.mkdir()
    stack.env_file.write_text(
        "# comment\nKAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1\nDATABASE_URL=postgresql://a:b@h:2/d\n"
    )
    assert stack.env() == {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1", "DATABASE_URL": "postgresql://a:b@h:2/d"}


@pytest.fixture
def stranger():
    """A process that is not ours (stands in for another clone's broker or a reused pid)."""
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


def test_down_never_touches_a_process_it_did_not_start(tmp_path, stranger, capsys):
    stack = LocalStack(tmp_path)
    stack.dir.mkdir()
    fake_home = tmp_path / "pg"
    (fake_home / "data").mkdir(parents=True)
    (fake_home / "data" / "postmaster.pid").write_text(f"{stranger.pid}\n")
    stack.state_file.write_text(
        json.dumps(
            {"kafka": {"pid": stranger.pid, "port": 1}, "postgres": {"home": str(fake_home), "port": 2}}
        )
    )
    assert stack.kafka.pid() is None and stack.postgres.pid() is None
    stack.down()
    assert stranger.poll() is None
    assert "kafka not running" in capsys.readouterr().out
    assert not stack.status()


def test_root_is_this_checkout():
    assert Path(__file__).resolve().parents[2] == ROOT
    assert LocalStack().dir == ROOT / ".devstack"
