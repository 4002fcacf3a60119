"""The end-of-run notification (``--hokusai-notify-url``): one Slack-compatible POST per run.

The message is ``{"text": ...}`` (what Slack and most chat webhooks show) plus ``blocks`` (Slack's
structured layout) and ``hokusai`` (the same facts as plain fields for other receivers): verdict,
root cause, its owner and remedy, and the check counts.

Sending is bounded: each attempt has a short timeout, a failed attempt is retried once, and the
whole send stops at a deadline even if a receiver drips its answer, so an unreachable or slow
webhook costs a few seconds at most. It never raises: a failure comes back as a sentence (with the
URL masked) for the terminal, and the verdict stays what it was.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .secret import SecretUrl, redact
from .settings import is_loopback_host

__all__ = ["ATTEMPT_TIMEOUT_S", "DEADLINE_S", "NotifyResult", "build_message", "send_notification"]

ATTEMPT_TIMEOUT_S = 2.0  #: per attempt (connect and each read)
RETRY_PAUSE_S = 0.3
DEADLINE_S = 5.0  #: for the whole send, both attempts included
ATTEMPTS = 2  #: one try and one retry
SCHEMA = "pytest-hokusai-notify/1"


@dataclass(frozen=True)
class NotifyResult:
    ok: bool
    attempts: int
    seconds: float
    problem: str = ""  #: why it failed, URL masked; empty when ok


def _counts(report: Mapping[str, Any]) -> dict[str, int]:
    given = report.get("counts")
    if isinstance(given, Mapping):
        return {str(k): int(v) for k, v in given.items() if isinstance(v, int)}
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    for check in report.get("checks") or []:
        outcome = str(check.get("outcome"))
        counts[outcome] = counts.get(outcome, 0) + 1
    return counts


def build_message(report: Mapping[str, Any], *, accepted: set[str] | None = None) -> dict[str, Any]:
    """The JSON message for a ``pytest-hokusai/1`` report (scrubbed of keys)."""
    verdict = str(report.get("verdict") or "fail")
    target = dict(report.get("target") or {})
    diagnoses = [d for d in report.get("diagnoses") or [] if isinstance(d, Mapping)]
    primary = next((d for d in diagnoses if d.get("primary")), None)
    counts = _counts(report)
    tally = ", ".join(f"{n} {name}" for name, n in counts.items() if n)
    where = target.get("api_url") or "the deployment"
    known = accepted or set()
    root: dict[str, Any] | None = None
    if primary is not None:
        code = str(primary.get("code"))
        root = {"code": code, "category": primary.get("category"), "owner": primary.get("owner"),
                "summary": primary.get("summary"), "remediation": primary.get("remediation"),
                "accepted": bool(primary.get("accepted")) or code in known}
    mark = ":white_check_mark:" if verdict == "pass" else ":x:"
    text = f"{mark} Hokusai live checks on {where}: *{verdict.upper()}* ({tally or 'no checks'})."
    if root is not None:
        text += (f"\nRoot cause: *{root['code']}* (owner: {root['owner']}){' [known issue]' if root['accepted'] else ''}"
                 f": {root['summary']}\nRemedy: {root['remediation']}")
    others = [str(d.get("code")) for d in diagnoses if d is not primary]
    if others:
        text += f"\nAlso: {', '.join(others)}."
    fields = [{"type": "mrkdwn", "text": f"*Verdict*\n{verdict.upper()}"},
              {"type": "mrkdwn", "text": f"*Checks*\n{tally or 'none'}"}]
    if root is not None:
        fields += [{"type": "mrkdwn", "text": f"*Root cause*\n{root['code']}"},
                   {"type": "mrkdwn", "text": f"*Owner*\n{root['owner']}"}]
    message = {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}},
                   {"type": "section", "fields": fields}],
        "hokusai": {
            "schema": SCHEMA,
            "verdict": verdict,
            "target": {"mode": target.get("mode"), "api_url": target.get("api_url"), "key": target.get("key")},
            "root_cause": root,
            "owner": root["owner"] if root else None,
            "remediation": root["remediation"] if root else None,
            "counts": counts,
            "findings": [{"code": d.get("code"), "owner": d.get("owner"), "primary": bool(d.get("primary")),
                          "accepted": bool(d.get("accepted")) or str(d.get("code")) in known} for d in diagnoses],
        },
    }
    scrubbed: dict[str, Any] = json.loads(redact(json.dumps(message, ensure_ascii=False)))
    return scrubbed


def _post_once(url: str, body: bytes, timeout: float) -> None:
    """POST once; raise on a network error or a non-2xx answer."""
    request = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "pytest-hokusai"})
    # loopback receivers are reached directly, whatever proxy the environment names
    handlers = [urllib.request.ProxyHandler({})] if is_loopback_host(urlsplit(url).hostname) else []
    opener = urllib.request.build_opener(*handlers)
    with opener.open(request, timeout=timeout) as response:
        response.read(4096)
        if not 200 <= response.status < 300:
            raise urllib.error.HTTPError(url, response.status, "not 2xx", response.headers, None)


def _why(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}"


def send_notification(url: SecretUrl, message: Mapping[str, Any], *, attempt_timeout: float = ATTEMPT_TIMEOUT_S,
                      deadline_s: float = DEADLINE_S, attempts: int = ATTEMPTS) -> NotifyResult:
    """POST ``message`` to ``url``: at most ``attempts`` tries, all within ``deadline_s`` seconds."""
    body = json.dumps(message, ensure_ascii=False).encode("utf-8")
    started = time.monotonic()
    outcome: dict[str, Any] = {"tries": 0, "problem": "", "ok": False}

    def work() -> None:
        for attempt in range(attempts):
            left = deadline_s - (time.monotonic() - started)
            if left <= 0.05:
                break
            outcome["tries"] = attempt + 1
            try:
                _post_once(url.reveal(), body, min(attempt_timeout, left))
            except Exception as exc:  # noqa: BLE001 - every failure is reported, none raised
                outcome["problem"] = _why(exc)
                if attempt + 1 < attempts:
                    time.sleep(min(RETRY_PAUSE_S, max(0.0, deadline_s - (time.monotonic() - started))))
                continue
            outcome["ok"] = True
            outcome["problem"] = ""
            return

    # A daemon thread with a join deadline: a receiver that drips bytes cannot hold the run longer.
    worker = threading.Thread(target=work, name="hokusai-notify", daemon=True)
    worker.start()
    worker.join(deadline_s + 0.5)
    seconds = round(time.monotonic() - started, 2)
    if worker.is_alive():
        problem = f"no complete answer within {deadline_s:g} s"
        return NotifyResult(False, int(outcome["tries"]), seconds, redact(problem))
    if outcome["ok"]:
        return NotifyResult(True, int(outcome["tries"]), seconds)
    problem = outcome["problem"] or "not attempted"
    return NotifyResult(False, int(outcome["tries"]), seconds,
                        redact(f"{problem} (tried {outcome['tries']} time(s) in {seconds:g} s)"))
