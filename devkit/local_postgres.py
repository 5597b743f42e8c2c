"""The local PostgreSQL 15: a private cluster of this clone (initdb'd once in `.devstack/postgres/`, or in /var/tmp
where the postgres user cannot enter the clone), started with `pg_ctl` and stopped through its data folder — never
by name or port. initdb and the server refuse to run as root, so as root they run as the `postgres` user."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

from devkit.errors import StackError
from devkit.pids import alive, cmdline, file_lock, log_tail, pid_file, wait_gone
from devkit.ports import pick_port
from devkit.stack_record import StackRecord, say
from devkit.waiting import run_sync

POSTGRES_PORT = 55432
PG_USER = PG_PASSWORD = PG_DATABASE = "telemetrypulse"
POSTGRES_READY_S = 60.0
PG_FALLBACK_PREFIX = "telemetrypulse-pg-"
# A Unix socket path is limited to 107 bytes; `.s.PGSQL.NNNNN` is appended to the directory.
MAX_SOCKET_DIR = 90

BOOTSTRAP_SQL = f"""\
SELECT 'CREATE ROLE {PG_USER} LOGIN SUPERUSER CREATEDB CREATEROLE PASSWORD ''{PG_PASSWORD}'''
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{PG_USER}')\\gexec
SELECT 'CREATE DATABASE {PG_DATABASE} OWNER {PG_USER}'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '{PG_DATABASE}')\\gexec
"""


def pg_bin(name: str) -> str:
    for folder in (os.environ.get("PG_BINDIR"), "/usr/lib/postgresql/15/bin"):
        if folder and Path(folder, name).is_file():
            return str(Path(folder, name))
    found = shutil.which(name)
    if found is None:
        raise StackError(f"PostgreSQL 15 `{name}` not found (install postgresql-15, or set DATABASE_URL)")
    return found


def _as_postgres() -> list[str]:
    # initdb and the server refuse to run as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def run_pg(args: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    # cwd=/ because pg_ctl and initdb fail when they cannot read their working directory (a 0700 root tree).
    done = subprocess.run(_as_postgres() + args, cwd="/", input=stdin, capture_output=True, text=True)
    if check and done.returncode != 0:
        output = (done.stdout + done.stderr).strip()
        raise StackError(f"`{' '.join(args[:2])}…` failed (exit {done.returncode}): {output[-1500:]}")
    return done


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def postgres_conf(*, port: int, socket_dir: Path) -> str:
    return (
        "# written by devkit.local_postgres; rewritten at every start\n"
        "listen_addresses = '127.0.0.1'\n"
        f"port = {port}\n"
        f"unix_socket_directories = '{socket_dir}'\n"
        "max_connections = 300\n"
        # Losing the OS page cache is not a case a throwaway test cluster must survive...
        "fsync = off\n"
        "full_page_writes = off\n"
        # ...but a killed server must keep every acknowledged commit: the fault tests count rows.
        "synchronous_commit = on\n"
        "password_encryption = 'scram-sha-256'\n"
    )


async def _pg_query(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.fetchval("SELECT 1")
    finally:
        await conn.close()


def postgres_ready(dsn: str) -> str | None:
    """None once a real login and query work, else the error text."""
    try:
        run_sync(lambda: _pg_query(dsn))
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    return None


def private_dsn(port: int) -> str:
    return f"postgresql://{PG_USER}:{PG_PASSWORD}@127.0.0.1:{port}/{PG_DATABASE}"


def wait_postgres(dsn: str) -> None:
    deadline = time.monotonic() + POSTGRES_READY_S
    while (error := postgres_ready(dsn)) is not None:
        if time.monotonic() > deadline:
            raise StackError(f"postgres not ready after {POSTGRES_READY_S:.0f}s: {error}")
        time.sleep(0.5)


class LocalPostgres:
    """This clone's private cluster: its folder and port in the record's `postgres` section."""

    def __init__(self, record: StackRecord, stack_dir: Path, owner: Path, machine_lock: Path) -> None:
        self.record = record
        self.stack_dir = stack_dir
        self.owner = owner  # the clone: a fallback cluster in /var/tmp is removed once its clone is gone
        self.machine_lock = machine_lock

    def home(self) -> Path:
        """The private cluster's folder (data/ and postgres.log), chosen once and recorded."""
        recorded = self.record.section("postgres").get("home")
        if recorded:
            return Path(recorded)
        local = self.stack_dir / "postgres"
        if not self._postgres_can_reach(self.stack_dir) or len(str(local / "data")) > MAX_SOCKET_DIR:
            # CI clones into a 0700 root-owned mktemp folder the postgres user cannot enter.
            digest = hashlib.sha1(str(self.owner).encode()).hexdigest()[:12]
            local = Path("/var/tmp") / f"{PG_FALLBACK_PREFIX}{digest}"
        self.record.update("postgres", home=str(local))
        return local

    @staticmethod
    def _postgres_can_reach(path: Path) -> bool:
        if os.geteuid() != 0:
            return True
        return (
            subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", str(path)], cwd="/").returncode
            == 0
        )

    def data(self) -> Path:
        return self.home() / "data"

    def port(self) -> int:
        return self.record.section("postgres")["port"]

    def dsn(self) -> str:
        return private_dsn(self.port())

    def pid(self) -> int | None:
        """The postmaster of our data dir, if it runs (its pid file, checked against /proc: cwd is the data dir)."""
        home = self.record.section("postgres").get("home")
        if not home:
            return None
        data_dir = Path(home) / "data"
        pid = pid_file(data_dir / "postmaster.pid")
        if not pid:
            return None
        argv = cmdline(pid)
        try:
            same_dir = Path(os.readlink(f"/proc/{pid}/cwd")) == data_dir
        except OSError:
            same_dir = False
        return pid if argv and Path(argv[0]).name in ("postgres", "postmaster") and same_dir else None

    def _collect_orphans(self) -> None:
        """Remove fallback clusters in /var/tmp whose clone is gone and whose server is not running."""
        for home in Path("/var/tmp").glob(f"{PG_FALLBACK_PREFIX}*"):
            try:
                owner = Path((home / "owner").read_text().strip())
            except OSError:
                continue
            if owner.exists() or alive(pid_file(home / "data" / "postmaster.pid")):
                continue
            shutil.rmtree(home, ignore_errors=True)
            say(f"removed {home} (its clone {owner} no longer exists)")

    def _initdb(self, home: Path) -> None:
        say(f"initdb {home / 'data'}")
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        _chown_postgres(home)
        (home / "owner").write_text(f"{self.owner}\n")
        fresh = home / "data.partial"  # renamed to data/ only when complete, so a crash mid-initdb is redone
        if fresh.exists():
            run_pg(["rm", "-rf", str(fresh)])
        initdb = [
            pg_bin("initdb"),
            "-D",
            str(fresh),
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ]
        run_pg([*initdb, "--auth-local=peer", "--auth-host=scram-sha-256", "--no-instructions"])
        with open(fresh / "postgresql.conf", "a") as conf:
            conf.write("\ninclude_if_exists = 'telemetrypulse.conf'\n")
        fresh.replace(home / "data")

    def up(self) -> bool:
        """Start the cluster unless ours already runs (initdb the first time); True if this call started it."""
        pid = self.pid()
        if pid is not None:
            wait_postgres(self.dsn())
            say(f"postgres reused on 127.0.0.1:{self.port()} (pid {pid})")
            return False
        self._collect_orphans()
        home = self.home()
        if not (home / "data" / "PG_VERSION").is_file():
            self._initdb(home)
        with file_lock(self.machine_lock):
            recorded = self.record.section("postgres").get("port")
            port = pick_port(recorded or POSTGRES_PORT, str(self.owner) + ":postgres")
            self.record.update("postgres", port=port)
            self.start()
        return True

    def start(self) -> int:
        """Start on the recorded port and data folder and wait until a login works; its pid."""
        port = self.port()
        data = self.data()
        conf = data / "telemetrypulse.conf"
        conf.write_text(postgres_conf(port=port, socket_dir=data))
        _chown_postgres(conf)
        log = self.home() / "postgres.log"
        stale = pid_file(data / "postmaster.pid")
        if stale and alive(stale) and Path(cmdline(stale)[0]).name not in ("postgres", "postmaster"):
            # Left by a killed server and its pid now taken by another program: the server would refuse to start.
            (data / "postmaster.pid").unlink(missing_ok=True)
        # pg_ctl detaches the server into its own session and waits (-w) until it accepts connections.
        done = run_pg(
            [pg_bin("pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"], check=False
        )
        if done.returncode != 0:
            raise StackError(
                f"postgres did not start (exit {done.returncode}); {log} ends with:\n{log_tail(log)}"
            )
        psql = [pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(data), "-p", str(port)]
        run_pg([*psql, "-U", "postgres", "-d", "postgres", "-f", "-"], stdin=BOOTSTRAP_SQL)
        wait_postgres(private_dsn(port))
        pid = self.pid()
        say(f"postgres ready on 127.0.0.1:{port} (pid {pid}, data {data})")
        return pid or 0

    def down(self, mode: str = "fast") -> int | None:
        """`pg_ctl stop -m mode` on our data folder; the server's pid, None if it was not running."""
        pid = self.pid()
        if pid is None:
            return None
        run_pg([pg_bin("pg_ctl"), "-D", str(self.data()), "-m", mode, "-w", "-t", "60", "stop"])
        wait_gone(pid, 10)
        return pid
