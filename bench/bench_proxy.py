"""Proxy latency overhead: small GETs through the authenticating proxy vs straight to MLflow.

One local stack. The same request (``experiments/search?max_results=1``) is sent N times through
the proxy (``{tracking_uri}/api/2.0/mlflow/...`` with a Bearer key, the key's validation cached by
a warm-up) and N times directly to MLflow (``{mlflow_url}/api/2.0/mlflow/...``), each side on its
own keep-alive ``requests.Session``, interleaved in blocks whose order alternates, so that drift
(other load on the machine) hits both sides alike. The baseline is measured in the same run.
"""

from __future__ import annotations

import time
from typing import Any

from _common import HTTP_TIMEOUT, TRACKER, api_service_pid, fmt, load1, new_result, stats_ms, target

NAME = "proxy"
TARGET_OVERHEAD_PCT = 15.0
_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"
_AJAX = "/ajax-api/2.0/mlflow/experiments/search?max_results=1"


def _cpu_s(pids: list[int]) -> float:
    """utime + stime of these processes, in seconds (from /proc/<pid>/stat)."""
    import os

    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _timed_get(session: Any, url: str) -> float:
    start = time.perf_counter()
    resp = session.get(url, timeout=HTTP_TIMEOUT)
    elapsed = time.perf_counter() - start
    if resp.status_code != 200:
        raise RuntimeError(f"GET {url.split('?')[0]} -> HTTP {resp.status_code}")
    return elapsed


def run(quick: bool = False) -> dict[str, Any]:
    """Measure and return the result dict (see ``_common.new_result``)."""
    import requests

    from pytest_hokusai.stack import start_stack

    n, block, warmup = (60, 10, 10) if quick else (300, 25, 30)
    result = new_result(NAME, "Proxy latency overhead (small GET, proxy vs direct MLflow)")
    result["method"] = [
        (f"{n} GET `experiments/search?max_results=1` through the proxy (Bearer key) and {n} direct to "
        f"MLflow, one keep-alive `requests.Session` each, after {warmup} warm-up requests each "
        "(the proxy's key-validation cache is warm)."),
        f"Interleaved in blocks of {block}; the block order alternates every round (P,D then D,P).",
        "Overhead = (proxy p50 - direct p50) / direct p50.",
        ("CPU per request (info): utime+stime from /proc of the API service over the proxy blocks, and of "
         "MLflow's processes over the direct blocks, divided by the requests; unlike latency it hardly "
         "depends on the machine's load."),
        ("Breakdown (info, fewer samples, same rounds): the API service's `/health` (the ASGI hop alone, no "
         "upstream), the balancer route `{api_url}/mlflow/ajax-api/...` (API service forwarding, no auth) and "
         "the same ajax-api URL on MLflow directly."),
    ]
    with start_stack() as stack:
        TRACKER.add(stack.pids())
        key = stack.mint_key(scopes=("read", "write"), name="bench proxy key")
        proxy_url = stack.tracking_uri + _PATH
        direct_url = stack.mlflow_url + _PATH
        extra = {
            "API service /health (hop only)": stack.api_url + "/health",
            "balancer route, ajax-api (forward, no auth)": stack.direct_mlflow_url + _AJAX,
            "MLflow ajax-api direct": stack.mlflow_url + "/mlflow" + _AJAX,
        }
        with requests.Session() as sp, requests.Session() as sd, requests.Session() as sx:
            sp.trust_env = sd.trust_env = sx.trust_env = False
            sp.headers["Authorization"] = "Bearer " + key.reveal()
            for _ in range(warmup):
                _timed_get(sp, proxy_url)
                _timed_get(sd, direct_url)
                for url in extra.values():
                    _timed_get(sx, url)
            times: dict[str, list[float]] = {"proxy": [], "direct": [], **{k: [] for k in extra}}
            loads: list[float] = [load1()]
            api_pids = [api_service_pid(stack)]
            mlflow_pids = [pid for proc in stack._processes if proc.name == "MLflow" for pid in proc.pids()]
            cpu_api_s = 0.0
            cpu_mlflow_s = 0.0
            rounds = n // block
            for r in range(rounds):
                order = (("proxy", sp, proxy_url), ("direct", sd, direct_url))
                if r % 2:
                    order = order[::-1]
                for label, session, url in order:
                    api0, ml0 = _cpu_s(api_pids), _cpu_s(mlflow_pids)
                    for _ in range(block):
                        times[label].append(_timed_get(session, url))
                    if label == "proxy":  # CPU the API service spends per proxied request (load-independent)
                        cpu_api_s += _cpu_s(api_pids) - api0
                    else:
                        cpu_mlflow_s += _cpu_s(mlflow_pids) - ml0
                names = list(extra)
                for label in names[r % len(names):] + names[:r % len(names)]:
                    for _ in range(max(2, block // 3)):
                        times[label].append(_timed_get(sx, extra[label]))
                loads.append(load1())
    p = stats_ms(times["proxy"])
    d = stats_ms(times["direct"])
    overhead = (p["p50"] - d["p50"]) / d["p50"] * 100.0
    mean_overhead = (p["mean"] - d["mean"]) / d["mean"] * 100.0
    breakdown = {label: stats_ms(times[label]) for label in extra}
    result["metrics"] = {
        "proxy_ms": p, "direct_ms": d, "breakdown_ms": breakdown, "p50_overhead_pct": overhead, "mean_overhead_pct": mean_overhead,
        "p50_overhead_ms": p["p50"] - d["p50"], "load1_during": [min(loads), max(loads)],
        "api_cpu_ms_per_request": cpu_api_s / len(times["proxy"]) * 1000.0,
        "mlflow_cpu_ms_per_request": cpu_mlflow_s / len(times["direct"]) * 1000.0,
    }
    result["tables"].append({
        "title": "Latency (ms)",
        "columns": ["path", "n", "p50", "p95", "mean", "min", "max"],
        "rows": [[label, int(s["n"]), fmt(s["p50"]), fmt(s["p95"]), fmt(s["mean"]), fmt(s["min"]), fmt(s["max"])]
                 for label, s in (("proxy", p), ("direct MLflow", d), *breakdown.items())],
    })
    result["targets"].append(target(
        "p50 overhead of proxy over direct", f"<= {TARGET_OVERHEAD_PCT:.0f} %",
        f"{overhead:.1f} % (+{p['p50'] - d['p50']:.2f} ms)", overhead <= TARGET_OVERHEAD_PCT,
    ))
    result["targets"].append(target(
        "mean overhead (info)", "-", f"{mean_overhead:.1f} % (+{p['mean'] - d['mean']:.2f} ms)", None,
    ))
    result["targets"].append(target(
        "CPU per request: API service (proxying) vs MLflow (direct answer) (info; load-independent)", "-",
        f"{result['metrics']['api_cpu_ms_per_request']:.2f} ms vs {result['metrics']['mlflow_cpu_ms_per_request']:.2f} ms",
        None,
    ))
    hop = breakdown["API service /health (hop only)"]["p50"]
    fwd = breakdown["balancer route, ajax-api (forward, no auth)"]["p50"]
    ajax = breakdown["MLflow ajax-api direct"]["p50"]
    result["notes"].append(
        f"Where the overhead goes (p50): a bare request to the API service takes {hop:.2f} ms; forwarding "
        f"without auth (balancer route) adds {fwd - ajax:+.2f} ms over the same MLflow URL direct; the "
        f"authenticated proxy adds {p['p50'] - d['p50']:+.2f} ms. The cost is the second Python HTTP hop "
        "(uvicorn, the auth middleware, the upstream client), not the (cached) key check."
    )
    result["notes"].append(
        f"1-min load average during the loop: {min(loads):.2f} .. {max(loads):.2f} (2 cores)."
    )
    return result
