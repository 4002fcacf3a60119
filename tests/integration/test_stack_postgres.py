"""The local stack on PostgreSQL: MLflow's backend store and the auth service's key store both in a
throwaway PostgreSQL server, and the stock MLflow client registering a model through the proxy.

Skipped (with the install command in the reason) when PostgreSQL's server binaries are missing;
CI installs Debian's ``postgresql`` package. The server runs as the ``postgres`` user when the
tests run as root (see :mod:`tests.support.postgres`).

After the flow the test reads both databases directly: the model is in MLflow's tables, the key's
prefix and hash are in the key store, and the raw key is in no column of any table of either.
Stopping the stack must close every connection; stopping the server must leave no process.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.postgres import (
    PG_MISSING_REASON,
    PostgresServer,
    PostgresUnavailable,
    postgres_server,
    processes_mentioning,
    still_running,
)
from tests.support.procs import alive

if TYPE_CHECKING:
    from pytest_hokusai.stack.launcher import Stack

MLFLOW_DB = "mlflow"
KEYS_DB = "keys"


def _wait_until(predicate: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


@contextlib.contextmanager
def _server_or_skip(**kwargs: Any) -> Iterator[PostgresServer]:
    """:func:`postgres_server`, or skip the test with the install hint if PostgreSQL cannot run here."""
    try:
        with postgres_server(**kwargs) as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))



# Starts a PostgreSQL server and a stack on it (~35 s): CI runs it with -m slow.
pytestmark = pytest.mark.slow

@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    """A throwaway PostgreSQL server with databases ``mlflow`` and ``keys``; after it stops, no
    process of it may remain. Scope: module."""
    with _server_or_skip() as server:
        server.create_database(MLFLOW_DB)
        server.create_database(KEYS_DB)
        yield server
        procs = server.processes()
        data_dir = str(server.data_dir)
    assert len(procs) >= 3, procs  # postmaster + checkpointer, background writer, ...
    assert still_running(procs) == [], f"PostgreSQL processes outlived the server: {still_running(procs)}"
    assert processes_mentioning(data_dir) == []
    assert not Path(data_dir).exists()


@pytest.fixture(scope="module")
def pg_stack(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack with MLflow's backend store and the key store on ``pg``. After it stops, neither
    database has a client connection left. Scope: module."""
    from pytest_hokusai.stack import start_stack

    # The bare scheme, as documented (the launcher picks psycopg2 when psycopg 3 is not installed).
    with start_stack(data_dir=tmp_path_factory.mktemp("pg-stack"),
                     backend_store_uri=pg.url(MLFLOW_DB, driver="postgresql"),
                     keystore_url=pg.url(KEYS_DB, driver="postgresql")) as stack:
        yield stack
        pids = stack.pids()

    def connections() -> list[tuple[Any, ...]]:
        return pg.query("postgres", "SELECT datname, count(*) FROM pg_stat_activity "
                        "WHERE datname IN (%s, %s) GROUP BY datname", (MLFLOW_DB, KEYS_DB))

    assert _wait_until(lambda: not connections(), 10), f"connections left after the stack stopped: {connections()}"
    assert not alive(pids), "stack processes outlived the stack"


def test_postgres_helper_stops_every_process_it_started(pg: PostgresServer) -> None:
    """A second server beside the module's: its own port and dir; after exit nothing of it remains,
    even with a client still connected (a backend process) when it is stopped."""
    with postgres_server() as other:
        assert other.port != pg.port and other.data_dir != pg.data_dir
        url = other.create_database("scratch")
        assert url.endswith(f"127.0.0.1:{other.port}/scratch")
        assert other.query("scratch", "SELECT current_database(), inet_server_addr()::text") \
            == [("scratch", "127.0.0.1/32")]
        client = other.connect("scratch")  # left open on purpose: a backend that must not survive
        procs = other.processes()
        assert len(procs) >= 4 and other.proc.pid in procs
        assert processes_mentioning(str(other.data_dir)) == [other.proc.pid]
    client.close()
    assert still_running(procs) == []
    assert processes_mentioning(str(other.data_dir)) == [] and not other.workdir.exists()


def test_postgres_helper_kills_a_server_that_does_not_stop() -> None:
    """A postmaster that cannot act on the shutdown signal (stopped with SIGSTOP) is SIGKILLed after
    ``stop_timeout``, and so is each of its children (each leads its own process group)."""
    started = time.monotonic()
    with _server_or_skip(stop_timeout=1.0) as other:
        client = other.connect()
        procs = other.processes()
        shmid = (other.data_dir / "postmaster.pid").read_text().splitlines()[6].split()[1]
        assert f" {shmid} " in Path("/proc/sysvipc/shm").read_text()
        os.kill(other.proc.pid, signal.SIGSTOP)
    client.close()
    assert still_running(procs) == [] and other.proc.returncode == -signal.SIGKILL
    # the killed postmaster's SysV segment is removed too (a clean shutdown removes it itself)
    assert not [ln for ln in Path("/proc/sysvipc/shm").read_text().splitlines()[1:] if ln.split()[1] == shmid]
    assert time.monotonic() - started < 15


def test_missing_binaries_raise_unavailable_with_the_install_hint(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    monkeypatch.setenv("HOKUSAI_PG_BIN", str(tmp_path))  # no initdb there
    with pytest.raises(PostgresUnavailable, match="apt-get install postgresql") as info, postgres_server():
        pass
    assert str(info.value) == PG_MISSING_REASON


def _tables(pg: PostgresServer, dbname: str) -> list[str]:
    rows = pg.query(dbname, "SELECT table_name FROM information_schema.tables "
                    "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY table_name")
    return [r[0] for r in rows]


def _cells_containing(pg: PostgresServer, dbname: str, needle: str) -> list[str]:
    """``table.column`` of every cell (any type, as text) in ``dbname`` that contains ``needle``."""
    hits = []
    for table in _tables(pg, dbname):
        with contextlib.closing(pg.connect(dbname)) as conn, conn.cursor() as cur:
            cur.execute(f'SELECT * FROM "{table}"')  # table names come from information_schema
            columns = [d[0] for d in cur.description]
            for row in cur.fetchall():
                hits += [f"{table}.{col}" for col, cell in zip(columns, row, strict=True)
                         if cell is not None and needle in _as_text(cell)]
    return hits


def _as_text(cell: Any) -> str:
    if isinstance(cell, (bytes, bytearray, memoryview)):
        return bytes(cell).decode("utf-8", errors="replace")
    return str(cell)


def test_stock_client_registers_a_model_with_both_stores_on_postgresql(pg_stack: Stack, pg: PostgresServer) -> None:
    from pytest_hokusai.registry import (
        Registration,
        cleanup,
        make_client,
        mlflow_env,
        register_toy_model,
        train_toy_model,
        unique_name,
    )
    from pytest_hokusai.stack.keystore import hash_key, key_prefix_of

    key = pg_stack.mint_key(scopes=("read", "write"), name="postgres registration")
    key_id = pg_stack.key_id_of(key)
    name, experiment = unique_name("hokusai-pg-model"), unique_name("hokusai-pg-exp")
    toy = train_toy_model(seed=6)
    env_before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_TOKEN",
                                                   "MLFLOW_HTTP_REQUEST_MAX_RETRIES")}
    partial = Registration()

    def remember(reg: Registration) -> None:
        nonlocal partial
        partial = reg

    with mlflow_env(pg_stack.tracking_uri, key, max_retries=0, request_timeout=30):
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        client = make_client(pg_stack.tracking_uri)
        try:
            reg = register_toy_model(client, toy, name, experiment, on_created=remember)
            assert reg.predictions_match is True and reg.version == "1"
            # MLflow's rows are in PostgreSQL, not in a SQLite file somewhere.
            assert pg.query(MLFLOW_DB, "SELECT name FROM registered_models WHERE name = %s", (name,)) == [(name,)]
            assert pg.query(MLFLOW_DB, "SELECT version, status, run_id FROM model_versions WHERE name = %s",
                            (name,)) == [(1, "READY", reg.run_id)]
            assert pg.query(MLFLOW_DB, "SELECT name, lifecycle_stage FROM experiments WHERE experiment_id = %s",
                            (int(reg.experiment_id or -1),)) == [(experiment, "active")]
        finally:
            problems = cleanup(client, model_names=[name], experiment_names=[experiment],
                               experiment_ids=[partial.experiment_id] if partial.experiment_id else [])
        assert problems == []
    assert {k: os.environ.get(k) for k in env_before} == env_before, "mlflow_env did not restore the environment"
    assert not (pg_stack.data_dir / "mlflow.db").exists(), "MLflow wrote a SQLite store"

    # Clean-up reached PostgreSQL: the model is gone, the experiment soft-deleted.
    assert pg.query(MLFLOW_DB, "SELECT count(*) FROM registered_models WHERE name = %s", (name,)) == [(0,)]
    assert pg.query(MLFLOW_DB, "SELECT lifecycle_stage FROM experiments WHERE name = %s", (experiment,)) \
        == [("deleted",)]

    # The key store: the key's prefix and hash, the proxy's validations and its last use; no SQLite file.
    raw = key.reveal()
    row = pg.query(KEYS_DB, "SELECT key_prefix, key_hash, last_used_at, scopes::text FROM hokusai_api_keys "
                   "WHERE key_id = %s", (key_id,))
    assert len(row) == 1
    prefix, digest, last_used, scopes = row[0]
    # (booleans first: pytest's assertion introspection would print the raw key's expressions)
    prefix_ok = prefix == key_prefix_of(raw) and raw.startswith(prefix) and len(prefix) < len(raw) - 16
    hash_ok = digest == hash_key(raw)
    assert prefix_ok, f"stored key_prefix {prefix!r} is not the key's prefix"
    assert hash_ok and last_used is not None and "write" in scopes
    validations = pg.query(KEYS_DB, "SELECT count(*) FROM hokusai_api_key_validations WHERE key_id = %s", (key_id,))
    assert validations[0][0] >= 1, "the proxy's validations did not reach the PostgreSQL key store"
    assert not (pg_stack.data_dir / "keys.db").exists()

    # The raw key (or its secret part) is in no cell of any table of either database.
    secret_part = raw[len(prefix):]
    assert _cells_containing(pg, KEYS_DB, prefix) == ["hokusai_api_keys.key_prefix"]  # the scan does find
    assert "hokusai_api_keys" in _tables(pg, KEYS_DB) and "registered_models" in _tables(pg, MLFLOW_DB)
    for dbname in (KEYS_DB, MLFLOW_DB):
        stored_in = _cells_containing(pg, dbname, secret_part)
        assert stored_in == [], f"the raw key is stored in {dbname}"


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://u:p@h:5/db?x=1", "postgresql+psycopg2://u:p@h:5/db?x=1"),
    ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2://u@h/db"),
    ("postgresql+pg8000://u@h/db", "postgresql+pg8000://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite:////tmp/x.db"),
    (None, None),
])
def test_bare_postgresql_scheme_gets_the_installed_driver(url: str | None, expected: str | None) -> None:
    from importlib.util import find_spec

    from pytest_hokusai.stack.launcher import pg_driver_url

    if find_spec("psycopg") is not None:
        pytest.skip("psycopg 3 is installed: SQLAlchemy's default driver works, nothing is rewritten")
    assert pg_driver_url(url) == expected


def test_live_registration_checks_pass_on_postgresql(pg_stack: Stack, pg: PostgresServer, tmp_path: Path) -> None:
    """The shipped live registration checks (``-m "live and hokusai_registration"``) against this stack."""
    import json

    key = pg_stack.mint_key(scopes=("read", "write"), name="postgres live checks")
    (tmp_path / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    report = tmp_path / "report.json"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HOKUSAI_", "MLFLOW_", "PYTEST_")) and k != "COV_CORE_SOURCE"}
    env.update({"HOKUSAI_API_KEY": key.reveal(), "HOME": str(tmp_path), "PYTHONWARNINGS": "ignore"})
    cmd = [sys.executable, "-m", "pytest", "--pyargs", "pytest_hokusai.checks", "-m", "live and hokusai_registration",
           "-p", "no:randomly", "--hokusai-api-url", pg_stack.api_url, "--hokusai-auth-url", pg_stack.auth_url,
           "--hokusai-report-json", str(report), "--hokusai-timeout=30", "-q"]
    done = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180, check=False)
    output = done.stdout + done.stderr
    leaked = key.reveal() in output or (report.exists() and key.reveal() in report.read_text(encoding="utf-8"))
    assert not leaked, "a full API key leaked into the live run's output or report"
    assert done.returncode == 0, output[-4000:]
    data = json.loads(report.read_text(encoding="utf-8"))
    outcomes = {c["nodeid"].rsplit("::", 1)[-1]: c["outcome"] for c in data["checks"]}
    assert outcomes == {"test_register_model_end_to_end": "passed", "test_artifact_roundtrip_through_proxy": "passed"}
    assert data["verdict"] == "pass" and data["diagnoses"] == []
    # The checks cleaned up after themselves, in PostgreSQL.
    assert pg.query(MLFLOW_DB, "SELECT name FROM registered_models WHERE name LIKE 'hokusai-check-%%'") == []
