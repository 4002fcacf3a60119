"""The auth service's usage routes: record, debit (contract 2.4), per-key stats and billing,
and the admin aggregate.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError

from .auth_common import get_or_404, request_faults, request_store
from .auth_schemas import (
    OVERAGE_PRICE,
    PRICE_PER_PREDICTION,
    BillingInfo,
    UsageDebit,
    UsageRecord,
    UsageStats,
)
from .keystore import utcnow

__all__ = ["add_usage_routes"]


def _month_bounds(period: str) -> tuple[datetime, datetime]:
    year, month = int(period[:4]), int(period[5:7])
    if not 1 <= month <= 12 or year < 1:
        raise RequestValidationError([{
            "type": "value_error", "loc": ("query", "period"), "input": period,
            "msg": "Value error, period must be YYYY-MM with a month from 01 to 12",
        }])
    start = datetime(year, month, 1, tzinfo=timezone.utc)
    end = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


def _utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=timezone.utc)


def add_usage_routes(app: FastAPI, admin: list[Any]) -> None:
    """``/api/v1/usage/*`` (``aggregate`` first: it would otherwise match as a key id)."""
    # -- usage -----------------------------------------------------------------------------
    @app.get("/api/v1/usage/aggregate", dependencies=admin)
    def aggregate(request: Request, service_id: str | None = None, start_date: datetime | None = None,
                  end_date: datetime | None = None) -> dict[str, Any]:
        start, end = _utc(start_date), _utc(end_date)
        store = request_store(request)
        s = store.summarize(service_id=service_id, start=start, end=end)
        return {
            "service_id": service_id, "start_date": start, "end_date": end,
            "total_requests": s.total_requests, "total_predictions": s.total_predictions,
            "total_compute_ms": s.total_compute_ms, "average_response_time_ms": s.average_response_time_ms,
            "error_rate": s.error_rate, "total_charged": s.total_amount, "top_endpoints": s.top_endpoints,
            "active_keys": store.distinct_keys_with_usage(service_id=service_id, start=start, end=end),
        }

    @app.post("/api/v1/usage/{key_id}")
    def record_usage(request: Request, key_id: uuid.UUID, body: UsageRecord) -> dict[str, Any]:
        try:
            request_store(request).record_usage(str(key_id), **body.model_dump())
        except KeyError:
            raise HTTPException(404, "API key not found") from None
        return {"status": "recorded", "key_id": str(key_id)}

    @app.post("/api/v1/usage/{key_id}/debit", responses={402: {"description": "Insufficient balance"}})
    def debit(request: Request, key_id: uuid.UUID, body: UsageDebit) -> dict[str, Any]:
        rec = get_or_404(request, key_id)
        amount = body.amount if body.amount is not None else body.predictions_count * PRICE_PER_PREDICTION
        if "payment-required" in request_faults(request):
            raise HTTPException(402, {"error": "insufficient_settled_balance",
                                      "message": "Insufficient balance", "balance": 0.0, "required": amount})
        result = request_store(request).debit(
            rec.key_id, amount, service_id=body.service_id, endpoint=body.endpoint,
            status_code=body.status_code, response_time_ms=body.response_time_ms,
            predictions_count=body.predictions_count, compute_ms=body.compute_ms,
            model_id=None if body.model_id is None else str(body.model_id),
            idempotency_key=body.idempotency_key,
        )
        if not result.accepted:
            raise HTTPException(402, {"error": "insufficient_settled_balance",
                                      "message": "Insufficient balance",
                                      "balance": result.balance, "required": amount})
        return {"accepted": True, "key_id": rec.key_id, "charged": result.charged,
                "balance": result.balance, "idempotent_replay": result.replay}

    @app.get("/api/v1/usage/{key_id}/stats", response_model=UsageStats, dependencies=admin)
    def usage_stats(request: Request, key_id: uuid.UUID,
                    period: Annotated[str | None, Query(pattern=r"^\d{4}-\d{2}$")] = None) -> UsageStats:
        rec = get_or_404(request, key_id)
        period = period or utcnow().strftime("%Y-%m")
        start, end = _month_bounds(period)
        s = request_store(request).summarize(key_id=rec.key_id, start=start, end=end)
        return UsageStats(key_id=key_id, period=period, total_requests=s.total_requests,
                          total_predictions=s.total_predictions, total_compute_ms=s.total_compute_ms,
                          average_response_time_ms=s.average_response_time_ms, error_rate=s.error_rate,
                          top_endpoints=s.top_endpoints)

    @app.get("/api/v1/usage/{key_id}/billing", response_model=BillingInfo, dependencies=admin)
    def billing(request: Request, key_id: uuid.UUID) -> BillingInfo:
        rec = get_or_404(request, key_id)
        now = utcnow()
        start, end = _month_bounds(now.strftime("%Y-%m"))
        s = request_store(request).summarize(key_id=rec.key_id, start=start, end=end)
        limit = rec.monthly_prediction_limit
        over = max(0, s.total_predictions - limit) if limit is not None else 0
        return BillingInfo(
            key_id=key_id, billing_plan=rec.billing_plan, monthly_limit=limit,
            current_usage={"period": now.strftime("%Y-%m"), "total_requests": s.total_requests,
                           "total_predictions": s.total_predictions, "total_compute_ms": s.total_compute_ms,
                           "total_charged": s.total_amount, "balance": rec.balance},
            overage_charges=round(over * OVERAGE_PRICE, 6), next_billing_date=end,
        )
