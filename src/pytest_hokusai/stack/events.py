"""The API service's SDK registration-event route, as the platform serves it (contract section 4,
"SDK registration event"; F28).

After its MLflow steps, the SDK's ``register_tokenized_model`` (and ``hokusai model register``)
POSTs the registration to ``{api}/api/models/tokenized-registration-events``; the platform mounts
the same router under ``/models`` too. The route sits behind the same auth middleware as the
proxy, then:

1. needs a write scope (``model:write``, ``mlflow:write``, ``write``, ...), else 403
   ``{"detail":"Insufficient permissions for model registration events"}``;
2. validates the body the way the platform's schema does (required non-empty strings
   ``model_name``, ``version``, ``token_id``, ``proposal_identifier``, ``metric_name``,
   ``mlflow_run_id``; a finite number ``baseline_value``; optional ``current_value``,
   ``model_uri``, ``api_schema`` (object), ``tags`` (string to string), ``eval_spec``,
   ``scorer_ref``, ``primary_metric``, ``benchmark_spec_id`` (at most 500 characters); unknown
   fields ignored), else FastAPI's 422;
3. answers ``{"status":"ok","model_id":"<name>/<version>/<token_id>","model_name",
   "version","event_emitted":true,"detail":null}``.

The stack records every accepted event (bounded) so tests can read what the SDK really sent:
``GET /_stack/registration-events`` -> ``{"events": [...]}``, ``DELETE`` empties it.

Faults: ``events-route-missing`` (the route is not deployed: JSON 404 ``{"detail":"Not Found"}``
after auth, as FastAPI answers) and ``events-hook-fails`` (the platform's hook fails: 502
``{"detail":"Failed to emit model registration event"}``).
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.requests import Request
from starlette.responses import JSONResponse

from .api_state import ApiRuntime
from .middleware import WRITE_SCOPES

__all__ = [
    "EVENTS_FORBIDDEN_DETAIL",
    "EVENT_PATHS",
    "HOOK_FAILED_DETAIL",
    "MAX_RECORDED_EVENTS",
    "RegistrationEventBody",
    "add_event_routes",
]

#: Where the platform serves the route (the models router is mounted twice).
EVENT_PATHS = ("/api/models/tokenized-registration-events", "/models/tokenized-registration-events")
EVENTS_FORBIDDEN_DETAIL = "Insufficient permissions for model registration events"
HOOK_FAILED_DETAIL = "Failed to emit model registration event"
MAX_RECORDED_EVENTS = 1000
_MAX_METADATA_CHARS = 500
_REQUIRED_TEXT = ("model_name", "version", "token_id", "proposal_identifier", "metric_name", "mlflow_run_id")
_OPTIONAL_TEXT = ("model_uri", "eval_spec", "scorer_ref", "primary_metric", "benchmark_spec_id")


class RegistrationEventBody(BaseModel):
    """The body the platform accepts (its ``TokenizedRegistrationEventRequest``, re-stated)."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    model_name: str
    version: str
    token_id: str
    proposal_identifier: str
    metric_name: str
    baseline_value: float
    mlflow_run_id: str
    current_value: float | None = None
    model_uri: str | None = None
    eval_spec: str | None = Field(default=None, max_length=_MAX_METADATA_CHARS)
    scorer_ref: str | None = Field(default=None, max_length=_MAX_METADATA_CHARS)
    primary_metric: str | None = Field(default=None, max_length=_MAX_METADATA_CHARS)
    benchmark_spec_id: str | None = Field(default=None, max_length=_MAX_METADATA_CHARS)
    api_schema: dict[str, Any] | None = None
    tags: dict[str, str] | None = None

    @field_validator(*_REQUIRED_TEXT, mode="before")
    @classmethod
    def _non_empty(cls, value: object) -> str:
        # A null mlflow_run_id (the SDK sends one for a model URI that is not runs:/...) fails here.
        if not isinstance(value, str) or not value.strip():
            raise ValueError("must be a non-empty string")
        return value.strip()

    @field_validator(*_OPTIONAL_TEXT, mode="before")
    @classmethod
    def _optional_text(cls, value: object, info: Any) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{info.field_name} must be a non-empty string when provided")
        return value.strip()

    @field_validator("baseline_value", "current_value")
    @classmethod
    def _finite(cls, value: float | None) -> float | None:
        if value is not None and not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value


class EventLog:
    """The accepted events, newest last, bounded (the oldest drop out)."""

    def __init__(self, limit: int = MAX_RECORDED_EVENTS) -> None:
        self._events: deque[dict[str, Any]] = deque(maxlen=limit)

    def add(self, event: dict[str, Any]) -> None:
        self._events.append(event)

    def all(self) -> list[dict[str, Any]]:
        return list(self._events)

    def clear(self) -> int:
        count = len(self._events)
        self._events.clear()
        return count


def add_event_routes(app: FastAPI, runtime: ApiRuntime, stack_token: Any) -> EventLog:
    """Add the event route (both mounts) and the stack's read-back endpoints to ``app``."""
    log = EventLog()

    async def write_principal(request: Request) -> dict[str, Any]:
        # Dependencies run before the body's validation errors are raised: a build without the
        # route answers 404 whatever the body, and a key without a write scope gets 403 before 422.
        if "events-route-missing" in runtime.faults:
            raise HTTPException(status_code=404, detail="Not Found")
        scopes = list(getattr(request.state, "scopes", None) or [])
        if not WRITE_SCOPES.intersection(scopes):
            raise HTTPException(status_code=403, detail=EVENTS_FORBIDDEN_DETAIL)
        return {"user_id": getattr(request.state, "user_id", None),
                "key_id": getattr(request.state, "api_key_id", None), "scopes": scopes}

    async def create_event(request: Request, body: RegistrationEventBody,
                           principal: dict[str, Any] = Depends(write_principal)) -> JSONResponse:  # noqa: B008
        if "events-hook-fails" in runtime.faults:
            return JSONResponse({"detail": HOOK_FAILED_DETAIL}, status_code=502)
        runtime.stats["registration_events"] += 1
        model_id = f"{body.model_name}/{body.version}/{body.token_id}"
        log.add({"received_at": time.time(), "path": request.url.path, "model_id": model_id,
                 "user_id": principal["user_id"], "key_id": principal["key_id"],
                 "payload": body.model_dump(exclude_none=True)})
        return JSONResponse({"status": "ok", "model_id": model_id, "model_name": body.model_name,
                             "version": body.version, "event_emitted": True, "detail": None})

    for path in EVENT_PATHS:
        app.add_api_route(path, create_event, methods=["POST"])

    @app.get("/_stack/registration-events", include_in_schema=False, dependencies=stack_token)
    async def list_events() -> dict[str, Any]:
        return {"events": log.all()}

    @app.delete("/_stack/registration-events", include_in_schema=False, dependencies=stack_token)
    async def clear_events() -> dict[str, Any]:
        return {"cleared": log.clear()}

    return log
