"""The notification sender against a real loopback receiver (tests/support/webhook.py).

One POST with the JSON message when the receiver answers 200; one retry after a 500 or a refused
connection; and a receiver that never answers costs the sender no more than its deadline
(``notify.DEADLINE_S``, a few seconds), both attempts included. The sender never raises, and its
problem text never shows the URL's path (the webhook's secret).
"""

from __future__ import annotations

import socket

from pytest_hokusai.notify import ATTEMPTS, DEADLINE_S, send_notification
from pytest_hokusai.secret import SecretUrl
from tests.support.webhook import serve_webhook

MESSAGE = {"text": "Hokusai live checks: *FAIL*", "hokusai": {"verdict": "fail"}}


def test_one_post_with_the_message() -> None:
    with serve_webhook("ok") as hook:
        result = send_notification(SecretUrl(hook.url), MESSAGE)
        received = list(hook.received)
    assert result.ok and result.attempts == 1 and not result.problem
    assert len(received) == 1
    assert received[0].path == "/services/T000/B000/not-a-real-secret"
    assert received[0].content_type == "application/json"
    assert received[0].json() == MESSAGE


def test_a_failing_receiver_gets_one_retry() -> None:
    with serve_webhook("error") as hook:
        result = send_notification(SecretUrl(hook.url), MESSAGE)
        received = list(hook.received)
    assert not result.ok and result.attempts == ATTEMPTS == 2 and len(received) == 2
    assert result.problem.startswith("HTTP 500") and "not-a-real-secret" not in result.problem


def test_an_unreachable_receiver() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = send_notification(SecretUrl(f"http://127.0.0.1:{port}/hooks/secret-part-123"), MESSAGE)
    assert not result.ok and result.attempts == 2
    assert "Connection" in result.problem and "secret-part-123" not in result.problem


def test_a_receiver_that_never_answers_is_cut_off_at_the_deadline() -> None:
    with serve_webhook("slow") as hook:
        result = send_notification(SecretUrl(hook.url), MESSAGE)
        attempts = len(hook.received)
    assert not result.ok and 1 <= attempts <= ATTEMPTS
    # the sender's bound (its contract), not a speed measurement: deadline plus the join margin
    assert result.seconds <= DEADLINE_S + 0.6, result
    assert "not-a-real-secret" not in result.problem
