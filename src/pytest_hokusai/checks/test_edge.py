"""Edge cases: bad, unknown, revoked, expired and read-only keys; concurrent clients; a large model.

Key rules (through the proxy, ``GET {tracking}/api/2.0/mlflow/experiments/search``): a malformed
key, a well-formed key nobody minted and no key are each answered 401 (served: AUTH_BYPASS); a
revoked key is answered 401 (still served: polled for up to ``--hokusai-revocation-wait-s``, then
REVOCATION_DELAYED with how long); an expired key is answered 401; a read-only key reads (200)
and gets 403 on writes. Then ``--hokusai-concurrency`` MLflow clients register versions of one
model and separate models at once, and a ``--hokusai-large-model-mb`` artifact goes up through the
proxy and comes back with the same SHA-256.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import secrets
import string
import threading
import time
from pathlib import Path

import pytest

from ..secret import Secret
from ..settings import EXPIRED_KEY_ENV, READONLY_KEY_ENV, REVOKED_KEY_ENV, extra_key
from ._support import HOST_SAFE_FILTERS, describe, keep_leftovers, record

# HOST_SAFE_FILTERS: warnings from the libraries the checks drive, silenced on the checks themselves
# so that a host project's filterwarnings = error cannot turn them into errors (see _support).
pytestmark = [pytest.mark.live, pytest.mark.hokusai_edge, *HOST_SAFE_FILTERS]

SEARCH = "/api/2.0/mlflow/experiments/search?max_results=1"
MLFLOW_API = "/api/2.0/mlflow"
#: A key with the right prefix and far too short a body (not a real key's shape).
MALFORMED_KEY = "hk_live_short"
POLL_INTERVAL_S = 0.5
CHUNK = 1024 * 1024
#: The MLflow client's request timeout during the large-model round trip (seconds).
LARGE_TIMEOUT_S = 120
LOCAL_HINT = "or run with --hokusai-target=local, which mints one"


def unknown_key() -> Secret:
    """A well-formed key nobody minted: ``hk_live_`` + 32 random letters and digits, made now."""
    alphabet = string.ascii_letters + string.digits
    return Secret("hk_live_" + "".join(secrets.choice(alphabet) for _ in range(32)), source="edge check (unknown)")


def _search(session, settings, key, label):
    return session.probe("GET", settings.tracking_uri + SEARCH, key=key, label=label)


# -- keys -------------------------------------------------------------------------------------
BAD_KEYS = {
    "malformed": "a malformed key (hk_live_ + 5 characters)",
    "unknown": "a well-formed key nobody minted",
    "none": "no key",
}


@pytest.mark.parametrize("case", list(BAD_KEYS))
def test_bad_key_is_rejected_with_401(hokusai_session, hokusai_settings, case):
    key = {"malformed": Secret(MALFORMED_KEY, source="edge check (malformed)"), "unknown": unknown_key(),
           "none": None}[case]
    result = _search(hokusai_session, hokusai_settings, key, f"check:edge-{case}-key")
    _fail_if_not_mlflow(result, hokusai_settings, BAD_KEYS[case])
    assert not result.ok, (
        f"AUTH_BYPASS: the proxy served MLflow to a request with {BAD_KEYS[case]}: {describe(result)}"
    )
    assert result.status == 401, f"the proxy must answer {BAD_KEYS[case]} with 401: {describe(result)}"


def _fail_if_not_mlflow(result, settings, what):
    """A 2xx that is not MLflow's JSON (a website's catch-all, a login page) is a wrong URL, never an
    open registry: fail with NOT_HOKUSAI_API saying what answered instead of claiming AUTH_BYPASS."""
    from ..diagnosis.tells import is_mlflow_search, what_answered

    if result.ok and not is_mlflow_search(result.exchange):
        pytest.fail(f"NOT_HOKUSAI_API: {settings.tracking_uri} answered {what_answered(result.exchange)} to a "
                    f"request with {what}, which is not MLflow: {describe(result)}", pytrace=False)


def _add_facts(hokusai_run, facts):
    """Give the diagnosis what the check learned (TriageEvidence.facts); never hides the failure."""
    with contextlib.suppress(Exception):  # the diagnosis is best effort; the check's own message stands
        evidence = hokusai_run.ensure_triage()
        for name, value in facts.items():
            evidence.add_fact(name, value)


def test_revoked_key_is_rejected(hokusai_session, hokusai_settings, hokusai_keys, hokusai_run, hokusai_measure,
                                 request):
    key = hokusai_keys.revoked
    if key is None:
        pytest.skip(f"no revoked key: export {REVOKED_KEY_ENV} (a key revoked in the Hokusai dashboard), {LOCAL_HINT}")
    first = _search(hokusai_session, hokusai_settings, key, "check:edge-revoked-key")
    _fail_if_not_mlflow(first, hokusai_settings, f"the revoked key {key.masked}")
    if not first.ok:
        assert first.status == 401, f"the proxy must answer a revoked key with 401: {describe(first)}"
        return
    other = _search(hokusai_session, hokusai_settings, unknown_key(), "check:edge-unknown-key")
    assert not other.ok, (
        f"AUTH_BYPASS: the revoked key {key.masked} is served, and so is a key nobody minted: the proxy does not "
        f"validate keys at all ({describe(first)}; {describe(other)})"
    )
    # Served: poll until the proxy stops serving it, for at most --hokusai-revocation-wait-s.
    bound = hokusai_settings.revocation_wait_s
    started = time.monotonic()
    last = first
    while last.ok and time.monotonic() - started <= bound:
        time.sleep(POLL_INTERVAL_S)
        last = _search(hokusai_session, hokusai_settings, key, "check:edge-revoked-key-poll")
    served_for = time.monotonic() - started  # > bound when it is still served
    record(request, "hokusai_revocation", f"revoked key served for {served_for:.1f} s after the first try "
                                          f"(bound {bound:g} s), then {last.status}")
    if not last.ok:
        hokusai_measure("revocation_delay_s", served_for)
        assert last.status == 401, f"the proxy must answer a revoked key with 401: {describe(last)}"
        return
    from ..diagnosis import FACT_REVOCATION_DELAY, FACT_REVOCATION_TOLERANCE

    _add_facts(hokusai_run, {FACT_REVOCATION_DELAY: served_for, FACT_REVOCATION_TOLERANCE: bound})
    pytest.fail(
        f"REVOCATION_DELAYED: the revoked key {key.masked} ({key.source}) is still served {served_for:.1f} s "
        f"after the first try (polled every {POLL_INTERVAL_S:g} s for up to {bound:g} s, "
        f"--hokusai-revocation-wait-s): {describe(last)}",
        pytrace=False,
    )


def _expired_key(hokusai_run):
    info = hokusai_run.local_info()
    if info is not None:
        from ..stack.launcher import Stack

        return Stack.from_json(info.stack_json).mint_key(expires_in_seconds=0, name="pytest-hokusai expired key")
    key = extra_key(EXPIRED_KEY_ENV)
    if key is None:
        pytest.skip(f"no expired key: export {EXPIRED_KEY_ENV} (a key past its expiry date), {LOCAL_HINT}")
    return key


def test_expired_key_is_rejected(hokusai_session, hokusai_settings, hokusai_run):
    key = _expired_key(hokusai_run)
    result = _search(hokusai_session, hokusai_settings, key, "check:edge-expired-key")
    _fail_if_not_mlflow(result, hokusai_settings, f"the expired key {key.masked}")
    assert not result.ok, f"the proxy served MLflow to the expired key {key.masked}: {describe(result)}"
    assert result.status == 401, f"the proxy must answer an expired key with 401: {describe(result)}"


def test_readonly_key_reads_but_cannot_write(hokusai_session, hokusai_settings, hokusai_keys, hokusai_unique_name,
                                            hokusai_run):
    from ..canary import canary_name

    key = hokusai_keys.readonly
    if key is None:
        pytest.skip(f"no read-only key: export {READONLY_KEY_ENV} (a key with the read scope only), {LOCAL_HINT}")
    read = _search(hokusai_session, hokusai_settings, key, "check:edge-readonly-read")
    assert read.status == 200, f"the read-only key cannot read: {describe(read)}"
    base = hokusai_settings.tracking_uri + MLFLOW_API
    writes = {
        "experiments/create": {"name": hokusai_unique_name("hokusai-edge-readonly-exp")},
        "registered-models/create": {"name": canary_name("readonly")},
    }
    served = []
    for path, body in writes.items():
        result = hokusai_session.probe("POST", f"{base}/{path}", key=key, json=body,
                                       label="check:edge-readonly-write")
        if result.ok:
            served.append(describe(result))
            _undo(hokusai_session, base, path, body, result.json, hokusai_run)
            continue
        assert result.status == 403, f"a write with the read-only key must get 403: {describe(result)}"
    assert not served, f"the proxy let the read-only key {key.masked} write: {'; '.join(served)}"


def _undo(session, base, path, body, answer, hokusai_run):
    """Delete what a wrongly allowed write created (with the primary key); a failure is a leftover."""
    from ..canary import experiment_leftover, model_leftover

    result = None
    if path == "experiments/create" and isinstance(answer, dict) and answer.get("experiment_id"):
        result = session.probe("POST", f"{base}/experiments/delete", json={"experiment_id": answer["experiment_id"]},
                               label="check:edge-cleanup")
        if not result.ok:
            keep_leftovers(hokusai_run, [experiment_leftover(body["name"], describe(result))])
    elif path == "registered-models/create":
        result = session.probe("DELETE", f"{base}/registered-models/delete", json={"name": body["name"]},
                               label="check:edge-cleanup")
        if not result.ok:
            keep_leftovers(hokusai_run, [model_leftover(body["name"], describe(result))])


# -- concurrency ------------------------------------------------------------------------------
#: How MLflow's SQL store answers the loser when two ``create_model_version`` calls for one model
#: pick the same next number: its INSERT violates the (name, version) key, and MLflow's own retry
#: loop reuses the failed session (``mlflow/store/model_registry/sqlalchemy_store.py``, 3.9 to 3.17),
#: so the client gets a 400 instead of the next number. SQLite says "UNIQUE constraint failed",
#: PostgreSQL "duplicate key value violates unique constraint"; either way the session message
#: follows, or MLflow's "Giving up after 3 attempts". The platform's MLflow has the same code: a
#: healthy deployment answers this now and then, and nothing is registered for the losing call.
VERSION_RACE_SIGNS = (
    "UNIQUE constraint failed: model_versions",
    "duplicate key value violates unique constraint",
    "Session's transaction has been rolled back due to a previous exception during flush",
    "Model Version creation error",
)
#: How often one client tries again after losing that race, as a careful client would; a call that
#: fails otherwise (a 5xx, a 429, the proxy's own error) is never tried again and fails the check.
VERSION_RACE_RETRIES = 4


def is_version_number_race(exc: BaseException) -> bool:
    """Whether ``exc`` is MLflow's answer to a lost version-number race (:data:`VERSION_RACE_SIGNS`)."""
    text = str(exc)
    return getattr(exc, "error_code", None) in ("BAD_REQUEST", "INVALID_STATE", "INTERNAL_ERROR") and any(
        sign in text for sign in VERSION_RACE_SIGNS)


def _retry_version_races(create, races):
    """``create()``, tried again (after a short random pause) while MLflow answers with a version-number
    collision; for each collision, the sign that gave it away is appended to ``races``."""
    for attempt in range(VERSION_RACE_RETRIES + 1):
        try:
            return create()
        except Exception as exc:
            if attempt == VERSION_RACE_RETRIES or not is_version_number_race(exc):
                raise
            races.append(next(sign for sign in VERSION_RACE_SIGNS if sign in str(exc)))
            time.sleep(0.05 + secrets.randbelow(150) / 1000)
    raise AssertionError("unreachable")  # pragma: no cover


def _parallel(n, task, nodeid, recorder):
    """Run ``task(i)`` for i in 0..n-1 on n threads released together; return (results, errors)."""
    barrier = threading.Barrier(n)

    def run(i):
        with recorder.context(nodeid=nodeid):
            barrier.wait(timeout=60)
            return task(i)

    results, errors = {}, {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=n, thread_name_prefix="hokusai-edge") as pool:
        futures = {pool.submit(run, i): i for i in range(n)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # noqa: BLE001  # reported per client below
                errors[i] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return results, errors


def test_concurrent_clients_lose_no_registration(hokusai_mlflow_client, hokusai_settings, hokusai_unique_name,
                                                 hokusai_run, hokusai_measure, request):
    from ..canary import canary_name, concurrency_canaries, ensure_registered_model, remove_registration
    from ..registry import make_client

    n = hokusai_settings.concurrency
    client = hokusai_mlflow_client
    uri = hokusai_settings.tracking_uri
    recorder = hokusai_run.state.recorder
    # Canary names (pytest_hokusai.canary): an earlier run's versions may still be there, so the check
    # compares what this run's clients were given with what the registry lists, not with 1..n.
    shared = canary_name("concurrency")
    separate = concurrency_canaries(n)
    experiment_name = hokusai_unique_name("hokusai-edge-concurrent-exp")
    experiment_id = None
    versions: dict[int, str] = {}
    model_versions: dict[int, str] = {}
    shared_created = False
    races: list[str] = []  # MLflow's version-number collisions, tried again (list.append is thread-safe)
    try:
        experiment_id = client.create_experiment(experiment_name)
        run = client.create_run(experiment_id, tags={"hokusai.check": "concurrency"})
        source = f"{run.info.artifact_uri}/model"
        shared_created = ensure_registered_model(client, shared)
        before = {str(v.version) for v in client.search_model_versions(f"name='{shared}'")}

        def new_version(i):
            own = make_client(uri)
            return str(_retry_version_races(lambda: own.create_model_version(
                shared, source=source, run_id=run.info.run_id, await_creation_for=0), races).version)

        def new_model(i):
            own = make_client(uri)
            ensure_registered_model(own, separate[i])
            return str(_retry_version_races(lambda: own.create_model_version(
                separate[i], source=source, run_id=run.info.run_id, await_creation_for=0), races).version)

        started = time.monotonic()
        versions, version_errors = _parallel(n, new_version, request.node.nodeid, recorder)
        hokusai_measure("concurrent_versions_s", time.monotonic() - started)
        started = time.monotonic()
        model_versions, model_errors = _parallel(n, new_model, request.node.nodeid, recorder)
        hokusai_measure("concurrent_models_s", time.monotonic() - started)
        listed = {str(v.version) for v in client.search_model_versions(f"name='{shared}'")}
        present: dict[str, set[str]] = {name: set() for name in separate}
        for name in separate:
            present[name] = {str(v.version) for v in client.search_model_versions(f"name='{name}'")}
    finally:
        if not hokusai_settings.keep:  # what cannot be removed is a leftover, never this check's failure
            left = remove_registration(client, model=shared, versions=list(versions.values()),
                                       model_created=shared_created,
                                       experiment_ids=[experiment_id] if experiment_id else [],
                                       experiment_names=[experiment_name])
            for i, name in enumerate(separate):
                left += remove_registration(client, model=name, versions=[model_versions[i]]
                                            if i in model_versions else [])
            keep_leftovers(hokusai_run, left)

    if races:
        record(request, "hokusai_version_races", f"{len(races)} version-number collision(s) in MLflow's SQL "
                                                 f"store, each tried again; e.g. {races[0]}")
    raced = f" (after {len(races)} version-number collision(s), each tried again up to {VERSION_RACE_RETRIES} times)" \
        if races else ""
    assert not version_errors, f"{len(version_errors)} of {n} concurrent create_model_version calls failed{raced}: " + \
        "; ".join(f"client {i}: {e}" for i, e in sorted(version_errors.items()))
    numbers = sorted(int(v) for v in versions.values())
    assert len(set(numbers)) == len(numbers), f"concurrent clients were given duplicate version numbers: {numbers}"
    assert not before & set(versions.values()), f"versions {numbers} reuse numbers already taken: {sorted(before)}"
    missing = sorted(set(versions.values()) - listed, key=int)
    assert not missing, f"the registry does not list versions {missing} of {shared} its clients were given"
    assert not model_errors, f"{len(model_errors)} of {n} concurrent model registrations failed{raced}: " + \
        "; ".join(f"client {i}: {e}" for i, e in sorted(model_errors.items()))
    lost = {name: sorted(present[name]) for i, name in enumerate(separate)
            if model_versions.get(i) not in present[name]}
    assert not lost, f"models lost or without the version their client was given after concurrent registration: {lost}"


# -- a large model --------------------------------------------------------------------------
def _write_random(path: Path, size: int) -> str:
    """Write ``size`` random bytes to ``path`` in 1 MiB chunks; return their SHA-256 (hex)."""
    digest = hashlib.sha256()
    remaining = size
    with path.open("wb") as fh:
        while remaining > 0:
            chunk = secrets.token_bytes(min(CHUNK, remaining))
            digest.update(chunk)
            fh.write(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def test_large_model_artifact_roundtrip(hokusai_mlflow_client, hokusai_settings, hokusai_unique_name,
                                        hokusai_measure, request, tmp_path, monkeypatch):
    client = hokusai_mlflow_client
    # After the body is sent, the server may still be writing it to its artifact store: give the
    # client's wait for the answer more than the per-request timeout (restored after the test).
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(LARGE_TIMEOUT_S, int(hokusai_settings.timeout))))
    size = max(1, int(hokusai_settings.large_model_mb * 1024 * 1024))
    upload = tmp_path / "large-model.bin"
    download_dir = tmp_path / "down"
    download_dir.mkdir()
    experiment_id = None
    run_id = None
    try:
        expected = _write_random(upload, size)
        experiment_id = client.create_experiment(hokusai_unique_name("hokusai-edge-large"))
        run_id = client.create_run(experiment_id, tags={"hokusai.check": "large-model"}).info.run_id
        started = time.monotonic()
        client.log_artifact(run_id, str(upload), artifact_path="large-model")
        up_s = time.monotonic() - started
        hokusai_measure("large_upload_s", up_s)
        listed = {f.path: f.file_size for f in client.list_artifacts(run_id, "large-model")}
        assert listed.get("large-model/large-model.bin") == size, (
            f"after the upload the server lists {listed or 'nothing'}, expected large-model/large-model.bin of "
            f"{size} bytes"
        )
        started = time.monotonic()
        local = Path(client.download_artifacts(run_id, "large-model/large-model.bin", str(download_dir)))
        down_s = time.monotonic() - started
        hokusai_measure("large_download_s", down_s)
        mb = size / 1024 / 1024
        record(request, "hokusai_large_model", f"{mb:g} MB: up {up_s:.2f} s ({mb / max(up_s, 1e-6):.1f} MB/s), "
                                               f"down {down_s:.2f} s ({mb / max(down_s, 1e-6):.1f} MB/s)")
        got_size = local.stat().st_size
        assert got_size == size, f"downloaded {got_size} bytes of the {size} uploaded"
        assert _sha256(local) == expected, f"the {mb:g} MB artifact came back with a different SHA-256"
        client.set_terminated(run_id)
    finally:
        for path in (upload, download_dir / "large-model.bin"):
            path.unlink(missing_ok=True)
        if not hokusai_settings.keep and run_id is not None:
            _delete_artifacts(client, run_id)
        if not hokusai_settings.keep and experiment_id is not None:
            with contextlib.suppress(Exception):  # best effort; the round trip is what is checked
                client.delete_experiment(experiment_id)


def _delete_artifacts(client, run_id):
    """Remove the uploaded artifact from the store (deleting the experiment leaves artifacts behind)."""
    with contextlib.suppress(Exception):  # best effort: not every artifact store supports deletion
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        get_artifact_repository(client.get_run(run_id).info.artifact_uri).delete_artifacts("large-model")
