"""A throwaway PostgreSQL server for tests: a fresh cluster in a temp dir, stopped and removed after.

::

    from tests.support.postgres import PG_MISSING_REASON, PostgresUnavailable, postgres_server

    try:
        with postgres_server() as pg:
            url = pg.create_database("mlflow")  # postgresql+psycopg2://hokusai@127.0.0.1:PORT/mlflow
            ...
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))

:func:`postgres_server` finds the server binaries (``$HOKUSAI_PG_BIN``, else the newest
``/usr/lib/postgresql/<version>/bin``, else ``PATH``), runs ``initdb`` into a new directory under
the system temp dir (trust authentication, superuser ``hokusai``), starts ``postgres`` on a free
loopback port with its unix socket inside that directory, in its own process group, and waits for
a psycopg2 connection on a monotonic deadline. PostgreSQL refuses to run as root, so as root both
run as the ``postgres`` user (``setpriv``, else ``runuser``), which the Debian package creates.

Stopping: SIGINT to the postmaster's group, wait, then SIGKILL the postmaster and every child it
had, then the directory is removed. SIGINT, not SIGTERM: for PostgreSQL SIGTERM is "smart" shutdown,
which waits for every client to disconnect (a leaked connection would stall the stop until the
SIGKILL); SIGINT is its "fast" shutdown, which ends the backends and exits at once. The SIGKILL
goes to each child too, because every backend leads its own process group (PostgreSQL calls
``setsid`` in each child), so a group kill of the postmaster alone would orphan them. If the binaries
or a way to drop root are missing, :class:`PostgresUnavailable` is raised with a reason naming
``apt-get install postgresql`` (:data:`PG_MISSING_REASON`).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PG_BIN_ENV",
    "PG_MISSING_REASON",
    "PostgresServer",
    "PostgresUnavailable",
    "find_pg_bindir",
    "postgres_server",
    "processes_mentioning",
    "still_running",
]

#: Environment variable naming the directory that holds ``initdb`` and ``postgres``.
PG_BIN_ENV = "HOKUSAI_PG_BIN"
#: Why a PostgreSQL test skips when the server binaries are not installed.
PG_MISSING_REASON = (
    "PostgreSQL server binaries (initdb, postgres) not found: install them with "
    "`apt-get install postgresql` (Debian/Ubuntu), or set HOKUSAI_PG_BIN to their directory"
)
SUPERUSER = "hokusai"
_SOCKET_MAX = 100  # unix socket paths must stay below ~107 bytes


class PostgresUnavailable(RuntimeError):
    """PostgreSQL cannot be run here (binaries missing, or root without a ``postgres`` user)."""


class PostgresStartError(RuntimeError):
    """initdb failed, or the server exited or was not ready before the deadline (log tail included)."""


def find_pg_bindir() -> Path | None:
    """The directory with ``initdb`` and ``postgres``: ``$HOKUSAI_PG_BIN``, the newest
    ``/usr/lib/postgresql/<version>/bin``, or ``PATH``; None if none has both."""
    override = os.environ.get(PG_BIN_ENV)
    if override:
        return Path(override) if _has_binaries(Path(override)) else None
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: _version_key(p.parent.name), reverse=True)
    for bindir in versions:
        if _has_binaries(bindir):
            return bindir
    found = shutil.which("initdb")
    if found and _has_binaries(Path(found).parent):
        return Path(found).parent
    return None


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def _version_key(name: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _drop_root() -> tuple[list[str], tuple[int, int] | None]:
    """argv prefix and (uid, gid) to run the server as ``postgres`` when we are root; else none."""
    if os.geteuid() != 0:
        return [], None
    try:
        pw = pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable("running as root and there is no 'postgres' user to run PostgreSQL as "
                                  "(PostgreSQL refuses root); `apt-get install postgresql` creates it") from None
    setpriv = shutil.which("setpriv")
    if setpriv:
        return [setpriv, f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"], (pw.pw_uid, pw.pw_gid)
    runuser = shutil.which("runuser")
    if runuser:
        return [runuser, "-u", "postgres", "--"], (pw.pw_uid, pw.pw_gid)
    raise PostgresUnavailable("running as root without setpriv or runuser to run PostgreSQL as 'postgres'")


# -- processes, by identity (pid + start time, so a reused pid is not mistaken for ours) ---------------
def _stat(pid: int) -> tuple[int, int] | None:
    """(ppid, starttime) of a live pid from /proc, or None if it is gone (or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def _all_stats() -> dict[int, tuple[int, int]]:
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                stats[int(entry)] = st
    return stats


def _descendants(root: int) -> dict[int, int]:
    """pid -> starttime of ``root`` and every live descendant of it."""
    stats = _all_stats()
    if root not in stats:
        return {}
    found = {root: stats[root][1]}
    grew = True
    while grew:
        grew = False
        for pid, (ppid, start) in stats.items():
            if ppid in found and pid not in found:
                found[pid] = start
                grew = True
    return found


def still_running(procs: dict[int, int]) -> list[int]:
    """The pids of ``procs`` (pid -> start time, as from :meth:`PostgresServer.processes`) that still
    run as the same process (a reused pid does not count)."""
    return [pid for pid, start in procs.items() if (st := _stat(pid)) is not None and st[1] == start]


def processes_mentioning(text: str) -> list[int]:
    """Live pids whose command line contains ``text`` (e.g. a data directory)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline and _stat(int(entry)) is not None:
            pids.append(int(entry))
    return pids


# -- the server ---------------------------------------------------------------------------------------
@dataclass
class PostgresServer:
    """A running throwaway server: ``host``, ``port``, superuser ``user`` (trust auth, no password)."""

    port: int
    workdir: Path
    proc: subprocess.Popen[bytes]
    host: str = "127.0.0.1"
    user: str = SUPERUSER
    databases: list[str] = field(default_factory=list)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def url(self, dbname: str = "postgres", driver: str = "postgresql+psycopg2") -> str:
        """SQLAlchemy URL of database ``dbname`` (``driver="postgresql"`` for the bare scheme)."""
        return f"{driver}://{self.user}@{self.host}:{self.port}/{dbname}"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        """A psycopg2 connection (the caller closes it; use ``contextlib.closing``)."""
        import psycopg2

        kwargs.setdefault("connect_timeout", 5)
        return psycopg2.connect(host=self.host, port=self.port, user=self.user, dbname=dbname, **kwargs)

    def create_database(self, name: str) -> str:
        """``CREATE DATABASE name`` (autocommit); returns its SQLAlchemy URL."""
        from psycopg2 import sql

        with contextlib.closing(self.connect()) as conn:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        self.databases.append(name)
        return self.url(name)

    def query(self, dbname: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement in ``dbname`` and return all rows."""
        with contextlib.closing(self.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(statement, params)
            rows: list[tuple[Any, ...]] = cur.fetchall()
            conn.rollback()
            return rows

    def processes(self) -> dict[int, int]:
        """pid -> start time of the postmaster and all its live children."""
        return _descendants(self.proc.pid)

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop(proc: subprocess.Popen[bytes], children: dict[int, int], timeout: float) -> None:
    """SIGINT (PostgreSQL's fast shutdown) to the postmaster's group, wait; then SIGKILL it and every
    remaining child."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while still_running(children) and time.monotonic() < deadline:
        time.sleep(0.05)
    stragglers = still_running(children)
    if proc.poll() is None:  # never signal proc.pid once reaped: the pid may have been reused
        stragglers.append(proc.pid)
    for pid in stragglers:  # each backend leads its own process group
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout)
    deadline = time.monotonic() + timeout
    while still_running(children) and time.monotonic() < deadline:
        time.sleep(0.05)


def _shmid(data_dir: Path) -> int | None:
    """The SysV shared memory id from ``postmaster.pid`` (line 7: ``key id``), if there is one."""
    try:
        lines = (data_dir / "postmaster.pid").read_text().splitlines()
        return int(lines[6].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def _remove_orphan_shm(shmid: int) -> None:
    """Remove the postmaster's small SysV segment once nothing is attached to it.

    A clean shutdown removes it; a killed postmaster leaves it behind (and the next start in the
    same data directory would reclaim it, but the directory is gone).
    """
    try:
        table = Path("/proc/sysvipc/shm").read_text().splitlines()[1:]
    except OSError:
        return
    for line in table:
        fields = line.split()
        if len(fields) > 6 and fields[1] == str(shmid) and fields[6] == "0":  # shmid, nattch
            ipcrm = shutil.which("ipcrm")
            if ipcrm:
                subprocess.run([ipcrm, "-m", str(shmid)], capture_output=True, timeout=10, check=False)


@contextlib.contextmanager
def postgres_server(
    base_dir: str | Path | None = None,
    *,
    startup_timeout: float = 20.0,
    stop_timeout: float = 10.0,
) -> Iterator[PostgresServer]:
    """Start a fresh PostgreSQL cluster, yield a :class:`PostgresServer`, stop and remove it after.

    ``base_dir``: where the cluster's directory is made (default: the system temp dir; as root it
    must be traversable by the ``postgres`` user, which pytest's ``tmp_path`` is not). Raises
    :class:`PostgresUnavailable` if PostgreSQL cannot run here, :class:`PostgresStartError` if it
    does not start within ``startup_timeout`` seconds.
    """
    bindir = find_pg_bindir()
    if bindir is None:
        raise PostgresUnavailable(PG_MISSING_REASON)
    prefix, owner = _drop_root()
    workdir = Path(tempfile.mkdtemp(prefix="hokusai-pg-", dir=base_dir))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "TZ": "UTC", "HOME": str(workdir)}
    try:
        if len(str(workdir)) + 20 > _SOCKET_MAX:
            raise PostgresStartError(f"{workdir} is too long for a unix socket path; use a shorter base_dir")
        if owner:
            os.chown(workdir, *owner)
        os.chmod(workdir, 0o700)
        init = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-D", str(workdir / "data"), "-A", "trust", "-U", SUPERUSER,
             "--no-sync", "--no-locale", "-E", "UTF8"],
            capture_output=True, timeout=60, start_new_session=True, check=False, env=env, cwd=workdir)
        if init.returncode != 0:
            raise PostgresStartError(f"initdb failed ({init.returncode}):\n"
                                     f"{init.stderr.decode(errors='replace')[-2000:]}")
        hba = workdir / "data" / "pg_hba.conf"
        hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
        if owner:
            os.chown(hba, *owner)
        server = _start(bindir, prefix, env, workdir, startup_timeout)
        children: dict[int, int] = {}
        shmid = _shmid(server.data_dir)
        try:
            children = server.processes()
            yield server
        finally:
            children.update(server.processes())
            _stop(server.proc, children, stop_timeout)
            if server.proc.returncode != 0 and shmid is not None:
                _remove_orphan_shm(shmid)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _start(bindir: Path, prefix: list[str], env: dict[str, str], workdir: Path,
           startup_timeout: float) -> PostgresServer:
    """Start postgres on a free port and wait until it accepts a connection (3 tries if the port is taken)."""
    import psycopg2

    deadline = time.monotonic() + startup_timeout
    for attempt in range(3):
        port = _free_port()
        with open(workdir / "postgres.log", "ab") as log:
            proc = subprocess.Popen(
                [*prefix, str(bindir / "postgres"), "-D", str(workdir / "data"), "-p", str(port),
                 "-k", str(workdir), "-h", "127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                env=env, cwd=workdir)
        server = PostgresServer(port=port, workdir=workdir, proc=proc)
        try:
            while True:
                try:
                    server.connect(connect_timeout=2).close()
                    return server
                except psycopg2.OperationalError:
                    if proc.poll() is not None:
                        break
                    if time.monotonic() >= deadline:
                        raise PostgresStartError(f"postgres not ready after {startup_timeout:g} s:\n"
                                                 f"{server.tail()}") from None
                    time.sleep(0.1)
        except BaseException:
            _stop(proc, server.processes(), 10.0)
            raise
        _stop(proc, {}, 10.0)
        if "already in use" not in server.tail() or attempt == 2 or time.monotonic() >= deadline:
            raise PostgresStartError(f"postgres exited during startup ({proc.returncode}):\n{server.tail()}")
    raise AssertionError("unreachable")
