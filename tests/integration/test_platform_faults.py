"""The stack reproduces the real platform's behaviours behind fault switches (issue 9), checked over
real HTTP with the stock MLflow client where a user would meet them:

* ``drop-delete-body``: the real proxy's body rule (POST/PUT/PATCH only): MLflow's JSON-body DELETEs
  get MLflow's 400 ``Missing value for required parameter 'name'``; POST writes still work;
* ``auth-stopped`` / ``mlflow-stopped``: the part's process is stopped and its port refuses, while
  the API answers exactly the real 503 / 502 bodies; switching the fault off brings the part back
  with its data;
* ``artifact-path-untranslated``: MLflow's HTML 404 on artifact routes only; metadata works.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit

import pytest

from pytest_hokusai.errors import StackError
from pytest_hokusai.secret import Secret
from pytest_hokusai.stack.launcher import Stack

REST = "/api/2.0/mlflow"
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def call(method: str, url: str, key: Secret | None, body: Any = None,
         data: bytes | None = None) -> tuple[int, dict[str, str], str]:
    payload = json.dumps(body).encode() if body is not None else data
    request = urllib.request.Request(url, data=payload, method=method)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key.reveal()}")
    if body is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read().decode()


def refuses(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        sock.settimeout(3)
        return sock.connect_ex((parts.hostname or "", parts.port or 80)) != 0


@pytest.fixture(scope="module")
def key(stack: Stack) -> Secret:
    return stack.mint_key(scopes=("read", "write"), name="platform-faults key")


def test_drop_delete_body_gives_mlflows_missing_parameter_400(healthy_stack: Stack, key: Secret) -> None:
    rest = healthy_stack.tracking_uri + REST
    name = "hokusai-it-drop-delete-body"
    healthy_stack.set_faults(["drop-delete-body"])
    status, _, text = call("POST", rest + "/registered-models/create", key, {"name": name})
    assert status == 200, text  # bodies of POST still go through
    status, _, text = call("DELETE", rest + "/registered-models/delete", key, {"name": name})
    assert status == 400, text
    answer = json.loads(text)  # MLflow >= 3.17 adds error_class and sqlstate beside these two
    assert {k: answer.get(k) for k in ("error_code", "message")} == {"error_code": "INVALID_PARAMETER_VALUE", "message": (
        "Missing value for required parameter 'name'. See the API docs for more information about request "
        "parameters.")}
    healthy_stack.set_faults([])
    status, _, text = call("DELETE", rest + "/registered-models/delete", key, {"name": name})
    assert status == 200, text  # the healthy stack forwards DELETE bodies


def test_auth_stopped_refuses_and_the_api_answers_503_unavailable(healthy_stack: Stack, key: Secret) -> None:
    search = healthy_stack.tracking_uri + REST + "/experiments/search?max_results=1"
    assert call("GET", search, key)[0] == 200  # validated (and cached) before the stop
    healthy_stack.set_faults(["auth-stopped"])
    assert refuses(healthy_stack.auth_url)
    status, headers, text = call("GET", search, key)
    assert (status, json.loads(text), headers.get("retry-after")) == (
        503, {"detail": "Authentication service unavailable"}, "1")
    with pytest.raises(StackError):
        healthy_stack.mint_key(name="cannot: auth is stopped")
    healthy_stack.set_faults([])
    assert not refuses(healthy_stack.auth_url)
    assert call("GET", search, key)[0] == 200, "the restarted auth service still knows the key"


def test_mlflow_stopped_refuses_and_the_proxy_answers_502(healthy_stack: Stack, key: Secret) -> None:
    search = healthy_stack.tracking_uri + REST + "/experiments/search?max_results=1"
    healthy_stack.set_faults(["mlflow-stopped"])
    assert refuses(healthy_stack.mlflow_url)
    status, _, text = call("GET", search, key)
    # The proxy names its MLFLOW_SERVER_URL: the MLflow root, or root + /mlflow from MLflow 3.12 on.
    assert (status, json.loads(text)) == (502, {"detail": f"Failed to connect to MLflow server at "
                                                          f"{healthy_stack.mlflow_rest_url}"})
    status, _, text = call("GET", healthy_stack.direct_mlflow_url + "/health", None)
    assert status == 502 and "<title>502 Bad Gateway</title>" in text  # the balancer's page
    status, _, text = call("GET", healthy_stack.api_url + "/api/health/mlflow", None)
    assert status == 503 and json.loads(text)["error_type"] == "ConnectError"
    healthy_stack.set_faults([])
    assert call("GET", search, key)[0] == 200


def test_artifact_path_untranslated_gives_mlflows_html_404_on_artifacts_only(healthy_stack: Stack,
                                                                            key: Secret) -> None:
    healthy_stack.set_faults(["artifact-path-untranslated"])
    search = healthy_stack.tracking_uri + REST + "/experiments/search?max_results=1"
    assert call("GET", search, key)[0] == 200
    artifact = healthy_stack.tracking_uri + "/api/2.0/mlflow-artifacts/artifacts/hokusai-it/x.txt"
    status, headers, text = call("PUT", artifact, key, data=b"x")
    assert status == 404 and "text/html" in headers.get("content-type", ""), (status, text[:200])
    healthy_stack.set_faults([])
    assert call("PUT", artifact, key, data=b"x")[0] == 200


def test_a_handle_cannot_stop_parts(stack: Stack) -> None:
    handle = Stack.from_json(stack.to_json())
    with pytest.raises(StackError, match="only the process that started it"):
        handle.set_faults(["auth-stopped"])
    handle.set_faults([])
