"""Cost of the end-of-run notification (``--hokusai-notify-url``) when the receiver is fine, failing,
unreachable or silent.

``pytest_hokusai.notify.send_notification`` against loopback receivers (``tests/support/webhook.py``):
one that answers 200 (the baseline), one that answers 500 (one retry), a closed port (refused, one
retry) and one that accepts the request and never answers (cut off at the deadline). The cases are
interleaved, ``reps`` rounds; wall time per send with ``time.perf_counter``. The target is the
issue's "costs at most a few seconds": every failing case within ``DEADLINE_S`` + 1 s.
"""

from __future__ import annotations

import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import fmt, new_result, target

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support.webhook

NAME = "notify"
MESSAGE = {"text": "bench", "hokusai": {"verdict": "fail"}}


def _closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/hooks/bench"


def run(quick: bool = False) -> dict[str, Any]:
    from pytest_hokusai.notify import ATTEMPT_TIMEOUT_S, DEADLINE_S, send_notification
    from pytest_hokusai.secret import SecretUrl
    from tests.support.webhook import serve_webhook

    reps = 2 if quick else 5
    result = new_result(NAME, "Cost of the end-of-run notification")
    result["method"] = [
        f"`send_notification` to four loopback receivers, interleaved, {reps} rounds; wall time per send.",
        f"Per attempt timeout {ATTEMPT_TIMEOUT_S:g} s, one retry, whole-send deadline {DEADLINE_S:g} s.",
    ]
    times: dict[str, list[float]] = {"ok (baseline)": [], "500 (retried)": [], "refused (retried)": [],
                                     "never answers": []}
    outcomes: dict[str, set[str]] = {name: set() for name in times}
    with serve_webhook("ok") as ok, serve_webhook("error") as bad, serve_webhook("slow") as slow:
        urls = {"ok (baseline)": ok.url, "500 (retried)": bad.url, "never answers": slow.url}
        for _ in range(reps):
            urls["refused (retried)"] = _closed_url()
            for name, samples in times.items():
                started = time.perf_counter()
                res = send_notification(SecretUrl(urls[name]), MESSAGE)
                samples.append(time.perf_counter() - started)
                outcomes[name].add(f"ok={res.ok} attempts={res.attempts}")
    base = statistics.median(times["ok (baseline)"])
    rows = []
    for name, values in times.items():
        med = statistics.median(values)
        rows.append([name, fmt(med, 3), fmt(max(values), 3), fmt(med / base, 1) if base else "-",
                     "; ".join(sorted(outcomes[name]))])
    result["tables"].append({"title": "Seconds per send", "columns": ["receiver", "median s", "max s",
                             "x baseline", "outcome"], "rows": rows})
    worst = max(max(v) for k, v in times.items() if k != "ok (baseline)")
    result["targets"].append(target("worst failing send (500, refused, silent)", f"<= {DEADLINE_S + 1:g} s",
                                    f"{worst:.2f} s", worst <= DEADLINE_S + 1))
    result["metrics"] = {"seconds": times}
    return result
