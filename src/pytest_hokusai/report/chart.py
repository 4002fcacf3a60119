"""Latency chart per endpoint, drawn with matplotlib (Agg, no pyplot) as an embeddable PNG.

matplotlib is imported inside :func:`latency_chart_png` only: importing this module is cheap.
:func:`latency_by_endpoint` groups recorded exchanges by an endpoint *template* so that the
run's generated names and ids do not give every request a bar of its own.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from ..evidence import Exchange
from ..state import TimingSeries

__all__ = [
    "MAX_ROWS",
    "chart_label",
    "endpoint_label",
    "endpoint_template",
    "latency_by_endpoint",
    "latency_chart_data_uri",
    "latency_chart_png",
    "png_data_uri",
    "summary_chart_figure",
    "summary_chart_png",
]

#: At most this many endpoints are drawn (the slowest by p95).
MAX_ROWS = 16
_LABEL_CHARS = 52

_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HEX_ID = re.compile(r"^[0-9a-fA-F]{16,}$")
_DIGITS = re.compile(r"^\d+$")
_DIGIT_RUN = re.compile(r"\d{4,}")


def _segment(segment: str) -> str:
    if not segment:
        return segment
    if _UUID.match(segment):
        return "{uuid}"
    if _DIGITS.match(segment):
        return "{n}"
    if _HEX_ID.match(segment) and any(c.isdigit() for c in segment):
        return "{id}"
    # generated names: hokusai-check-1718000000-ab12, model-v3-20240101...
    if _DIGIT_RUN.search(segment) or (len(segment) >= 24 and any(c.isdigit() for c in segment)):
        return "{name}"
    return segment


def endpoint_template(method: str, url: str) -> str:
    """``METHOD host/path?param=*``: ids, numbers, generated names and every query value collapsed.

    >>> endpoint_template("get", "https://h.example/api/2.0/mlflow/runs/get?run_id=0123456789abcdef0123")
    'GET h.example/api/2.0/mlflow/runs/get?run_id=*'
    >>> endpoint_template("GET", "http://127.0.0.1:5000/models/1234/versions/7")
    'GET 127.0.0.1:5000/models/{n}/versions/{n}'
    """
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if parts.port:
            host = f"{host}:{parts.port}"
    except ValueError:
        return f"{method.upper()} {url.split('?', 1)[0]}"
    path = "/".join(_segment(s) for s in parts.path.split("/")) or "/"
    names: list[str] = []
    for name, _ in parse_qsl(parts.query, keep_blank_values=True):
        if name not in names:
            names.append(name)
    query = "?" + "&".join(f"{n}=*" for n in names) if names else ""
    return f"{method.upper()} {host}{path}{query}"


def _service_of(url: str, services: Mapping[str, str]) -> tuple[str, str] | None:
    """``(service name, path below its URL)`` for the longest service URL prefix of ``url``."""
    for prefix in sorted(services, key=len, reverse=True):
        base = prefix.rstrip("/")
        if url == base or url.startswith((base + "/", base + "?")):
            return services[prefix], url[len(base):] or "/"
    return None


def endpoint_label(method: str, url: str, services: Mapping[str, str] | None = None) -> str:
    """``METHOD /path?param=* (service)``: :func:`endpoint_template` without the host and port.

    ``services`` maps base URLs to names (``{"http://h:1/api/mlflow": "proxy"}``); the path is then
    given below that base and the service is named, so that two hosts' ``/health`` stay apart.

    >>> endpoint_label("GET", "http://127.0.0.1:5000/api/mlflow/api/2.0/mlflow/runs/get?run_id=12ab",
    ...                {"http://127.0.0.1:5000/api/mlflow": "proxy"})
    'GET /api/2.0/mlflow/runs/get?run_id=* (proxy)'
    >>> endpoint_label("POST", "http://127.0.0.1:5001/api/v1/keys/validate")
    'POST /api/v1/keys/validate'
    """
    found = _service_of(url, services or {})
    rest = url if found is None else "http://service" + found[1]
    template = endpoint_template(method, rest)
    verb, _, target = template.partition(" ")
    path = "/" + target.split("/", 1)[1] if "/" in target else "/"
    return f"{verb} {path}" + (f" ({found[0]})" if found else "")


def latency_by_endpoint(exchanges: Iterable[Exchange], services: Mapping[str, str] | None = None
                        ) -> dict[str, list[float]]:
    """Latencies (ms) of the exchanges that got an HTTP status, grouped by :func:`endpoint_template`
    (or, given ``services``, by :func:`endpoint_label`: no host or port, the service named).

    Exchanges that failed before any status (refused, timeout...) are left out: their "latency" is
    the time to the error, not the endpoint's.
    """
    series: dict[str, list[float]] = {}
    for exchange in exchanges:
        if exchange.status is None:
            continue
        if services is None:
            key = endpoint_template(exchange.method, exchange.url)
        else:
            key = endpoint_label(exchange.method, exchange.url, services)
        series.setdefault(key, []).append(float(exchange.elapsed_ms))
    return series


_URL_HOST = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s?#]+", re.IGNORECASE)
_HOST_PORT = re.compile(r"(?<![\w/])(?:\[[0-9a-f:.]+\]|[a-z0-9][a-z0-9.-]*):\d{1,5}(?=/|\s|$)", re.IGNORECASE)


def chart_label(name: str) -> str:
    """A bar's label: the name without any scheme, host or port (they spend the label's width and
    say nothing), wrapped onto two lines at a ``/`` when long instead of cut in the middle."""
    text = _HOST_PORT.sub("", _URL_HOST.sub("", name))
    text = " ".join(text.split())
    if len(text) <= _LABEL_CHARS:
        return text
    cut = text.rfind("/", 0, _LABEL_CHARS)
    if cut <= 0:
        cut = _LABEL_CHARS
    head, tail = text[:cut], text[cut:]
    if len(tail) > _LABEL_CHARS:
        tail = "\u2026" + tail[-(_LABEL_CHARS - 1):]
    return head + "\n" + tail


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def summary_chart_figure(rows: Mapping[str, Mapping[str, float | int | None]], *, unit: str = "ms",
                         title: str = "Latency per endpoint",
                         budgets: Mapping[str, float] | None = None) -> Any:
    """A matplotlib ``Figure``: one horizontal bar pair per row (p95 light, p50 dark, labelled).

    The axis is logarithmic and starts a little below the smallest value, so that one 3 s upload
    does not squash every 5 ms request into a sliver; ``budgets`` (``{label: value}``, same unit)
    are drawn as dashed vertical lines. Labels have no host or port (:func:`chart_label`).
    """
    from matplotlib.figure import Figure  # heavy: loaded only when a chart is drawn

    items = [(name, v) for name, v in rows.items() if _number(v.get("p95")) or _number(v.get("p50"))]
    items.sort(key=lambda kv: _number(kv[1].get("p95")) or _number(kv[1].get("p50")) or 0.0, reverse=True)
    dropped = max(0, len(items) - MAX_ROWS)
    items = items[:MAX_ROWS]
    labels = [chart_label(name) for name, _ in items]
    lines = sum(label.count("\n") + 1 for label in labels)
    fig = Figure(figsize=(9.5, 1.1 + 0.26 * max(1, lines) + 0.12 * max(1, len(items))), dpi=100)
    ax = fig.subplots()
    if not items:
        ax.text(0.5, 0.5, "no latency samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        p50 = [_number(v.get("p50")) or _number(v.get("p95")) or 0.0 for _, v in items]
        p95 = [_number(v.get("p95")) or p for (_, v), p in zip(items, p50)]
        marks = [b for b in (budgets or {}).values() if b and b > 0]
        smallest = min(x for x in p50 + p95 if x > 0)
        floor = smallest / 3.0  # every bar spans at least log10(3) of the axis
        top = max(p95 + marks)
        ax.set_xscale("log")
        ys = list(range(len(items)))
        ax.barh(ys, [x - floor for x in p95], left=floor, height=0.7, color="#f4b183", label="p95")
        ax.barh(ys, [x - floor for x in p50], left=floor, height=0.4, color="#2f5597", label="p50")
        for y, (_, v), a, b in zip(ys, items, p50, p95):
            text = f"p50 {a:.0f} / p95 {b:.0f} {unit} (n={int(_number(v.get('n')) or 0)})"
            ax.text(b * 1.12, y, text, va="center", fontsize=7)
        styles = ["--", ":", "-."]
        for i, (name, budget) in enumerate(sorted((budgets or {}).items(), key=lambda kv: kv[1])):
            if budget and budget > 0:
                ax.axvline(budget, color="#c62828", linestyle=styles[i % len(styles)], linewidth=1,
                           label=f"{name} {budget:g} {unit}")
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7, family="monospace")
        ax.invert_yaxis()
        ax.set_xlim(floor, top * 12)  # room for the p50/p95 text right of the longest bar
        ax.set_xlabel(f"latency ({unit}, log scale)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    suffix = f" (slowest {MAX_ROWS} of {MAX_ROWS + dropped})" if dropped else ""
    ax.set_title(title + suffix, fontsize=9)
    return fig


def summary_chart_png(rows: Mapping[str, Mapping[str, float | int | None]], *, unit: str = "ms",
                      title: str = "Latency per endpoint", budgets: Mapping[str, float] | None = None) -> bytes:
    """PNG bytes of :func:`summary_chart_figure` from ``{name: {p50, p95, n}}``."""
    fig = summary_chart_figure(rows, unit=unit, title=title, budgets=budgets)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def latency_chart_png(series: Mapping[str, list[float]], *, budgets: Mapping[str, float] | None = None) -> bytes:
    """PNG bytes of the p50/p95 latency (ms) per endpoint or measure, from raw samples.

    An empty mapping gives a small "no latency samples" image, so callers need no special case.
    """
    rows = {name: TimingSeries(list(samples)).summary() for name, samples in series.items() if samples}
    return summary_chart_png(rows, budgets=budgets)


def latency_chart_data_uri(series: Mapping[str, list[float]]) -> str:
    """``data:image/png;base64,...`` of :func:`latency_chart_png` (self-contained, works offline)."""
    return png_data_uri(latency_chart_png(series))


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
