"""Minimal reproductions of a recorded exchange: a ``curl`` command and a few lines of MLflow client.

Both are rebuilt from an :class:`~pytest_hokusai.evidence.Exchange` (method, URL, how the key was
presented, the request body's shape) and never hold a key: where the run presented one, the
command reads it from the environment (``$HOKUSAI_API_KEY``, or the variable of the extra key it
was, e.g. ``$HOKUSAI_REVOKED_API_KEY``); a well-formed key nobody minted is made up on the spot.
What the exchange answered (status and ``detail``) is given next to each command, so the reader
can compare, and :func:`answer_of` is how a test compares a command's answer with the recording.

Pure functions; no I/O, no third-party import.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..evidence import Exchange

__all__ = [
    "HTTP_STATUS_MARK",
    "UNKNOWN_KEY_VAR",
    "Repro",
    "answer_of",
    "curl_for",
    "detail_of",
    "mlflow_for",
]

#: curl prints this before the status code (``-w``), on a line of its own after the body.
HTTP_STATUS_MARK = "HTTP "
#: The shell variable a reproduction uses for a well-formed key nobody minted.
UNKNOWN_KEY_VAR = "UNKNOWN_KEY"
_UNKNOWN_KEY_LINE = (f'{UNKNOWN_KEY_VAR}="hk_live_$(head -c 16 /dev/urandom | od -An -tx1 | tr -d \' \\n\')"'
                     "  # a well-formed key nobody minted")
_VAR = "\x00VAR:"  # sentinel around a variable name inside a shell word being built
_MASKED_KEY = re.compile(r"hk_(?:live|test|dev)_\u2026[A-Za-z0-9]{0,4}|\u2026[A-Za-z0-9]{4}")
_MLFLOW_PREFIXES = ("/api/2.0/mlflow/", "/api/2.0/mlflow-artifacts/", "/ajax-api/2.0/mlflow/")


@dataclass(frozen=True)
class Repro:
    """One command and what it needs: ``setup`` lines (made-up keys), ``exact`` when nothing of the
    original request is missing (a header value or a body the recording kept only in shape)."""

    command: str
    setup: tuple[str, ...] = ()
    exact: bool = True
    note: str = ""


def _word(text: str) -> str:
    """A shell word for ``text`` where ``{_VAR}NAME{_VAR}`` stands for ``"$NAME"``."""
    pieces = text.split(_VAR)
    out = []
    for i, piece in enumerate(pieces):
        if i % 2 == 1:
            out.append(f'"${piece}"')
        elif piece:
            out.append(shlex.quote(piece))
    return "".join(out) or "''"


def _var(name: str) -> str:
    return f"{_VAR}{name}{_VAR}"


def _key_var(masked: str, key_vars: Mapping[str, str]) -> str:
    return key_vars.get(masked, UNKNOWN_KEY_VAR)


def _with_vars(text: str, key_vars: Mapping[str, str], used: set[str]) -> tuple[str, bool]:
    """Replace every masked key in ``text`` by its variable; False if something else stays masked."""

    def swap(match: re.Match[str]) -> str:
        name = _key_var(match.group(0), key_vars)
        used.add(name)
        return _var(name)

    swapped = _MASKED_KEY.sub(swap, text)
    return swapped, "\u2026" not in swapped.replace(_VAR, "") and "***" not in swapped


def _auth_parts(auth: str, key_vars: Mapping[str, str], used: set[str]) -> tuple[list[str], str | None, bool]:
    """curl arguments for how the key was presented, a query value to put in the URL, and exactness."""
    if not auth or auth == "none":
        return [], None, True
    if auth.startswith("query api_key="):
        name = _key_var(auth.removeprefix("query api_key="), key_vars)
        used.add(name)
        return [], name, True
    if auth.startswith("body api_key="):
        return [], None, True  # the key is in the recorded body
    if auth.startswith("X-API-Key "):
        value, exact = _with_vars(auth.removeprefix("X-API-Key "), key_vars, used)
        return ["-H", "X-API-Key: " + value], None, exact
    value, exact = _with_vars(auth, key_vars, used)
    return ["-H", "Authorization: " + value], None, exact


def _body_parts(body: str | None, key_vars: Mapping[str, str], used: set[str]) -> tuple[list[str], bool]:
    if body is None:
        return [], True
    size = re.fullmatch(r"<(\d+) bytes>", body)
    if size:  # only the size was kept (an artifact upload): send as many zero bytes
        return ["--data-binary", f"@<(head -c {size.group(1)} /dev/zero)"], True
    if body.startswith("<") and body.endswith(">"):
        return ["--data-binary", "@body.bin"], False
    value, exact = _with_vars(body, key_vars, used)
    try:
        is_json = isinstance(json.loads(body), (dict, list))
    except ValueError:
        is_json = False
    head = ["-H", "Content-Type: application/json"] if is_json else []
    return [*head, "--data-raw", value], exact


def curl_for(exchange: Exchange, key_vars: Mapping[str, str]) -> Repro:
    """A one-line ``curl`` command that sends the recorded request again.

    ``key_vars`` maps a key's masked form (``hk_live_…wxyz``) to the environment variable that holds
    it (``HOKUSAI_API_KEY``). The command prints the body, then ``HTTP <status>`` on its own line.
    """
    used: set[str] = set()
    args: list[str] = ["-sS", "--max-time", "30"]
    method = exchange.method.upper()
    if method == "HEAD":
        args.append("-I")
    elif method != "GET":
        args += ["-X", method]
    if method in ("GET", "HEAD", "OPTIONS"):
        args.append("-L")  # the suite's session follows redirects for these, as the recording shows
    auth_args, query_var, auth_exact = _auth_parts(exchange.auth, key_vars, used)
    body_args, body_exact = _body_parts(exchange.request_body, key_vars, used)
    url = exchange.url
    if query_var is not None:
        url = re.sub(r"([?&]api_key=)[^&]*", lambda m: m.group(1) + _var(query_var), url)
    url_text, url_exact = _with_vars(url, key_vars, used)
    words = ["curl"] + [_word(a) if _VAR in a else (a if a.startswith("@<(") else shlex.quote(a))
                        for a in args + auth_args + body_args]
    words += ["-w", shlex.quote(f"\\n{HTTP_STATUS_MARK}%{{http_code}}\\n"), _word(url_text)]
    setup = (_UNKNOWN_KEY_LINE,) if UNKNOWN_KEY_VAR in used else ()
    exact = auth_exact and body_exact and url_exact
    note = "" if exact else "parts of the original request were recorded masked or by size only"
    return Repro(" ".join(words), setup, exact, note)


# -- the stock MLflow client ------------------------------------------------------------------------
_CLIENT_CALLS: dict[tuple[str, str], str] = {
    ("GET", "experiments/search"): "client.search_experiments(max_results=1)",
    ("POST", "experiments/search"): "client.search_experiments(max_results=1)",
    ("GET", "experiments/get-by-name"): 'client.get_experiment_by_name("Default")',
    ("POST", "experiments/create"): 'client.create_experiment(f"hokusai-repro-{int(time.time())}")',
    ("POST", "runs/create"): 'client.create_run(experiment_id="0")',
    ("GET", "registered-models/search"): "client.search_registered_models(max_results=1)",
    ("POST", "registered-models/create"): 'client.create_registered_model(f"hokusai-repro-{int(time.time())}")',
}


def _mlflow_endpoint(url: str, tracking_uri: str) -> str | None:
    """The REST endpoint (``/api/2.0/mlflow/...``) of a URL under the tracking URI, else None."""
    base = tracking_uri.rstrip("/")
    if not url.startswith(base + "/"):
        return None
    rest = urlsplit(url[len(base):]).path
    return rest if rest.startswith(_MLFLOW_PREFIXES) else None


def mlflow_for(exchange: Exchange | None, tracking_uri: str, key_vars: Mapping[str, str]) -> str:
    """A few lines of Python with the stock MLflow client that meet the same failure.

    For an exchange the client itself would make (a REST call under the tracking URI, the key as
    Bearer or none), the matching ``MlflowClient`` call, or the raw REST call with MLflow's own
    ``http_request`` for endpoints without one; for anything else (auth service, health) the
    third party's first call, ``search_experiments``, which meets the failure from their side.
    """
    endpoint = _mlflow_endpoint(exchange.url, tracking_uri) if exchange is not None else None
    auth = exchange.auth if exchange is not None else "Bearer"
    var = "HOKUSAI_API_KEY"
    if auth.startswith(("Bearer ", "ApiKey ", "X-API-Key ", "query api_key=")):
        masked = auth.split("=", 1)[1] if auth.startswith("query") else auth.rsplit(" ", 1)[-1]
        var = _key_var(masked, key_vars)
    if var == UNKNOWN_KEY_VAR:
        token_line = 'os.environ["MLFLOW_TRACKING_TOKEN"] = "hk_live_" + os.urandom(16).hex()  # a key nobody minted'
    elif exchange is not None and auth == "none" and endpoint is not None:
        token_line = 'os.environ.pop("MLFLOW_TRACKING_TOKEN", None)  # the failing call carried no key'
    else:
        token_line = f'os.environ["MLFLOW_TRACKING_TOKEN"] = os.environ["{var}"]  # sent as Authorization: Bearer'
    retries = 'os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"  # show a 5xx or 429 at once, not after minutes'
    method = exchange.method.upper() if exchange is not None else "GET"
    call = None
    if endpoint is None:
        call = "client.search_experiments(max_results=1)  # a third party's first call"
    else:
        call = _CLIENT_CALLS.get((method, endpoint.split("/api/2.0/mlflow/", 1)[-1]))
    if call is not None:
        imports = ["import os", "import time"] if "time." in call else ["import os"]
        return "\n".join([*imports, "", "from mlflow import MlflowClient", "", token_line, retries,
                          f"client = MlflowClient(tracking_uri={tracking_uri!r})", call])
    body = exchange.request_body if exchange is not None else None
    json_arg = ""
    if body and not body.startswith("<"):
        try:
            json_arg = f", json={json.loads(body)!r}"
        except ValueError:
            json_arg = ""
    return "\n".join([
        "import os", "", "from mlflow.utils.rest_utils import MlflowHostCreds, http_request  # the client's REST call",
        "", token_line, retries,
        f'creds = MlflowHostCreds({tracking_uri!r}, token=os.environ.get("MLFLOW_TRACKING_TOKEN"))',
        f"response = http_request(creds, {endpoint!r}, {method!r}{json_arg})",
        "print(response.status_code, response.text)"])


# -- what an exchange answered ---------------------------------------------------------------------
def detail_of(body: str) -> str:
    """The part of a body that names the failure: JSON ``detail`` / ``message`` / ``error_code`` /
    ``error``, else the text itself (whitespace collapsed)."""
    text = " ".join(str(body or "").split())
    try:
        obj = json.loads(text)
    except ValueError:
        return text
    if isinstance(obj, dict):
        for name in ("detail", "message", "error_code", "error"):
            if name in obj:
                value = obj[name]
                return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return json.dumps(obj, sort_keys=True)


def answer_of(curl_output: str) -> tuple[int | None, str]:
    """(status, detail) from the output of a command made by :func:`curl_for`."""
    body, _, tail = curl_output.rstrip("\n").rpartition("\n" + HTTP_STATUS_MARK)
    if not tail.strip().isdigit():
        return None, detail_of(curl_output)
    status = int(tail.strip())
    return (status if status else None), detail_of(body)
