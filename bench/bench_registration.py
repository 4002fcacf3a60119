"""Registration throughput at 1/4/8/16 concurrent clients, proxy vs direct, and no lost versions.

One local stack. For each concurrency level C and each path (proxy with the key, direct to
MLflow) one fresh registered model is created; C threads, each with its own stock
``mlflow.MlflowClient``, then register versions of that SAME model concurrently
(``create_model_version`` with a small placeholder ``s3://`` source (MLflow >= 3.1x refuses an
``mlflow-artifacts:`` one without the run that holds it); the stock client also waits
for the version to be READY, i.e. one extra GET). Registering into one model is the contended
case: MLflow must hand out version numbers 1..N without gaps or duplicates, which is checked
afterwards (search through MLflow directly). The two paths are interleaved per level (order
alternates). Separately, with one client, the full user flow (``mlflow.sklearn.log_model`` with
``registered_model_name``: run, artifact upload, logged model, registration) is timed on both paths.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import statistics
import threading
import time
import uuid
from typing import Any

from _common import TRACKER, fmt, load1, new_result, pct, target

NAME = "registration"
LEVELS = (1, 4, 8, 16)
_BUDGET_S = 80.0  # the whole benchmark stays under 90 s; levels past the budget are skipped


class _Env:
    """Set MLflow client env vars for one phase and restore them afterwards."""

    def __init__(self, **values: str | None) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self) -> None:
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __exit__(self, *exc: object) -> None:
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _burst(uri: str, model: str, clients: int, per_client: int) -> dict[str, Any]:
    """``clients`` threads x ``per_client`` create_model_version on ``model``; timings and versions."""
    from mlflow import MlflowClient

    MlflowClient(tracking_uri=uri, registry_uri=uri).create_registered_model(model)
    barrier = threading.Barrier(clients + 1)
    latencies: list[float] = []
    versions: list[int] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(i: int) -> None:
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        barrier.wait(timeout=30)
        for j in range(per_client):
            start = time.perf_counter()
            try:
                mv = client.create_model_version(model, source=f"s3://hokusai-bench-placeholder/{model}/{i}-{j}")
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                continue
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                versions.append(int(mv.version))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait(timeout=30)
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=120)
    wall = time.perf_counter() - start
    return {"latencies": latencies, "versions": versions, "errors": errors, "wall": wall,
            "hung": sum(t.is_alive() for t in threads)}


def _stored_versions(mlflow_url: str, model: str) -> list[int]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_url, registry_uri=mlflow_url)
    found = client.search_model_versions(f"name='{model}'", max_results=10000)
    return sorted(int(mv.version) for mv in found)


def _log_model_once(uri: str, model_name: str, estimator: Any, experiment: str) -> float:
    import mlflow
    import mlflow.sklearn

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    mlflow.set_experiment(experiment)
    start = time.perf_counter()
    quiet = contextlib.ExitStack()
    quiet.enter_context(contextlib.redirect_stdout(io.StringIO()))
    quiet.enter_context(contextlib.redirect_stderr(io.StringIO()))
    with quiet, mlflow.start_run():
        # explicit requirements: skip MLflow's requirement inference (a model-loading subprocess
        # of several seconds that is the same on both paths and would only dilute the ratio)
        mlflow.sklearn.log_model(estimator, name="model", registered_model_name=model_name,
                                 pip_requirements=["scikit-learn"])
    return time.perf_counter() - start


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    import mlflow  # noqa: F401 - imported first: MLflow resets its loggers' levels on import

    from pytest_hokusai.stack import start_stack

    total_ops = 16 if quick else 64
    log_model_reps = 1 if quick else 2
    result = new_result(NAME, "Registration throughput at 1/4/8/16 concurrent clients, proxy vs direct")
    result["method"] = [
        (f"Per level C and path: one new registered model, then C threads (own stock `MlflowClient` each) "
        f"register {total_ops} versions of it in total ({total_ops}//C each) with `create_model_version` "
        "(small placeholder `s3://` source; the stock client then polls the version once until READY)."),
        ("Throughput = registrations / wall time from the start barrier to the last thread done; latency = "
        "per call as seen by the client. Proxy and direct interleaved per level (order alternates)."),
        ("Lost-version check: MLflow's stored versions of each model must be exactly 1..N (N = calls that "
        "succeeded), and the numbers the clients got back unique and equal to that set."),
        (f"Full flow, 1 client: `mlflow.sklearn.log_model(..., registered_model_name=...)` of a tiny "
        f"LogisticRegression, {log_model_reps}x per path after one untimed warm-up; `pip_requirements` given "
        "explicitly so MLflow skips its requirement inference (a several-second subprocess, equal on both paths)."),
        ("Client threads run in the benchmark's own process (GIL) on the same 2 cores as the servers, so "
        "high-concurrency numbers measure the whole box, not the proxy alone."),
    ]
    mlflow_logger = logging.getLogger("mlflow")
    old_level = mlflow_logger.level
    mlflow_logger.setLevel(logging.ERROR)  # e.g. "Waiting up to 300 seconds for model version ..."
    deadline = time.monotonic() + (_BUDGET_S if not quick else 60.0)
    rows: list[list[Any]] = []
    per_level: dict[str, Any] = {}
    integrity_ok = True
    integrity_notes: list[str] = []
    flow: dict[str, list[float]] = {"proxy": [], "direct": []}
    try:
        with start_stack() as stack:
            TRACKER.add(stack.pids())
            key = stack.mint_key(scopes=("read", "write"), name="bench registration key")
            paths: dict[str, tuple[str, dict[str, str | None]]] = {
                "proxy": (stack.tracking_uri, {"MLFLOW_TRACKING_TOKEN": key.reveal()}),
                "direct": (stack.mlflow_url, {"MLFLOW_TRACKING_TOKEN": None}),
            }
            base_env: dict[str, str | None] = {"MLFLOW_TRACKING_USERNAME": None, "MLFLOW_TRACKING_PASSWORD": None,
                        "MLFLOW_TRACKING_URI": None, "MLFLOW_REGISTRY_URI": None}
            with _Env(**base_env):
                # warm-up both paths (imports, connection pools, auth cache)
                for label, (uri, env) in paths.items():
                    with _Env(**env):
                        _burst(uri, f"bench-warm-{label}-{uuid.uuid4().hex[:6]}", 2, 2)
                for idx, clients in enumerate(LEVELS):
                    if time.monotonic() > deadline:
                        result["notes"].append(f"time budget reached: level {clients} and above skipped")
                        break
                    order = ["proxy", "direct"] if idx % 2 == 0 else ["direct", "proxy"]
                    for label in order:
                        uri, env = paths[label]
                        model = f"bench-reg-{label}-{clients}-{uuid.uuid4().hex[:6]}"
                        with _Env(**env):
                            burst = _burst(uri, model, clients, total_ops // clients)
                        stored = _stored_versions(stack.mlflow_url, model)
                        ok_n = len(burst["versions"])
                        contiguous = stored == list(range(1, ok_n + 1))
                        unique = sorted(burst["versions"]) == stored
                        if not (contiguous and unique and not burst["errors"] and not burst["hung"]):
                            integrity_ok = False
                            integrity_notes.append(
                                f"{label} C={clients}: {ok_n} ok, {len(burst['errors'])} errors, "
                                f"{burst['hung']} hung, stored={stored[:5]}..{stored[-3:]} "
                                f"contiguous={contiguous} unique={unique}"
                                + (f"; first error: {burst['errors'][0]}" if burst["errors"] else ""))
                        lat = burst["latencies"]
                        per_level[f"{label}-{clients}"] = {
                            "ops": ok_n, "errors": len(burst["errors"]), "wall_s": burst["wall"],
                            "per_s": ok_n / burst["wall"], "p50_ms": pct(lat, 50) * 1000,
                            "p95_ms": pct(lat, 95) * 1000, "load1": load1(),
                        }
                # full flow, one client
                from sklearn.linear_model import LogisticRegression

                est = LogisticRegression().fit([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])
                with _Env(**paths["direct"][1]):
                    _log_model_once(paths["direct"][0], "bench-flow-warm", est, "bench-flow")
                for rep in range(log_model_reps):
                    for label in (["proxy", "direct"] if rep % 2 == 0 else ["direct", "proxy"]):
                        if time.monotonic() > deadline + 10:
                            break
                        uri, env = paths[label]
                        with _Env(**env):
                            flow[label].append(_log_model_once(uri, f"bench-flow-{label}", est, "bench-flow"))
                for label, done in flow.items():
                    if done:
                        stored = _stored_versions(stack.mlflow_url, f"bench-flow-{label}")
                        if stored != list(range(1, len(done) + 1)):
                            integrity_ok = False
                            integrity_notes.append(f"log_model {label}: stored versions {stored}")
    finally:
        mlflow_logger.setLevel(old_level)
    for clients in LEVELS:
        p, d = per_level.get(f"proxy-{clients}"), per_level.get(f"direct-{clients}")
        if not p or not d:
            continue
        rows.append([clients, fmt(p["per_s"], 1), fmt(d["per_s"], 1), fmt(p["per_s"] / d["per_s"], 2),
                     fmt(p["p50_ms"], 1), fmt(d["p50_ms"], 1), fmt(p["p95_ms"], 1), fmt(d["p95_ms"], 1),
                     f"{p['errors']}/{d['errors']}", fmt(p["load1"], 2)])
    result["metrics"] = {"levels": per_level, "log_model_s": flow}
    result["tables"].append({
        "title": f"create_model_version into one model, {total_ops} registrations per cell",
        "columns": ["clients", "proxy reg/s", "direct reg/s", "proxy/direct", "proxy p50 ms", "direct p50 ms",
                    "proxy p95 ms", "direct p95 ms", "errors p/d", "load1"],
        "rows": rows,
    })
    if flow["proxy"] and flow["direct"]:
        result["tables"].append({
            "title": "Full flow, 1 client: sklearn log_model + register (seconds)",
            "columns": ["path", "runs", "median"],
            "rows": [[label, ", ".join(fmt(x) for x in flow[label]), fmt(statistics.median(flow[label]))]
                     for label in ("proxy", "direct")],
        })
    result["targets"].append(target(
        "no version lost (stored versions 1..N, unique, no errors)", "all cells", "yes" if integrity_ok else
        "; ".join(integrity_notes), integrity_ok,
    ))
    for clients in LEVELS:
        p, d = per_level.get(f"proxy-{clients}"), per_level.get(f"direct-{clients}")
        if p and d:
            result["targets"].append(target(
                f"throughput proxy/direct at {clients} client(s) (info)", "-",
                f"{p['per_s']:.1f} vs {d['per_s']:.1f} reg/s ({p['per_s'] / d['per_s']:.2f})", None,
            ))
    if flow["proxy"] and flow["direct"]:
        mp, md = statistics.median(flow["proxy"]), statistics.median(flow["direct"])
        result["targets"].append(target(
            "log_model+register, 1 client, proxy/direct (info)", "-",
            f"{mp:.2f} s vs {md:.2f} s ({mp / md:.2f})", None,
        ))
    return result
