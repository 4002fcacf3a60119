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
from urllib.parse import parse_qsl, urlsplit

from ..evidence import Exchange
from ..state import TimingSeries

__all__ = [
    "MAX_ROWS",
    "endpoint_template",
    "latency_by_endpoint",
    "latency_chart_data_uri",
    "latency_chart_png",
    "png_data_uri",
    "summary_chart_png",
]

#: At most this many endpoints are drawn (the slowest by p95).
MAX_ROWS = 16
_LABEL_CHARS = 64

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


def latency_by_endpoint(exchanges: Iterable[Exchange]) -> dict[str, list[float]]:
    """Latencies (ms) of the exchanges that got an HTTP status, grouped by :func:`endpoint_template`.

    Exchanges that failed before any status (refused, timeout...) are left out: their "latency" is
    the time to the error, not the endpoint's.
    """
    series: dict[str, list[float]] = {}
    for exchange in exchanges:
        if exchange.status is None:
            continue
        key = endpoint_template(exchange.method, exchange.url)
        series.setdefault(key, []).append(float(exchange.elapsed_ms))
    return series


def _short(label: str) -> str:
    if len(label) <= _LABEL_CHARS:
        return label
    keep = _LABEL_CHARS - 1
    return label[: keep // 3] + "\u2026" + label[-(keep - keep // 3):]


def summary_chart_png(rows: Mapping[str, Mapping[str, float]], *, unit: str = "ms",
                      title: str = "Latency per endpoint") -> bytes:
    """A horizontal bar chart (p95 light, p50 dark, labelled) from ``{name: {p50, p95, n}}``."""
    from matplotlib.figure import Figure  # heavy: loaded only when a chart is drawn

    items = sorted(rows.items(), key=lambda kv: float(kv[1].get("p95", 0)), reverse=True)
    dropped = max(0, len(items) - MAX_ROWS)
    items = items[:MAX_ROWS]
    height = 0.8 + 0.34 * max(1, len(items))
    fig = Figure(figsize=(7.6, height), dpi=100)
    ax = fig.subplots()
    if not items:
        ax.text(0.5, 0.5, "no latency samples", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
    else:
        labels = [_short(name) for name, _ in items]
        p50 = [float(v.get("p50", 0)) for _, v in items]
        p95 = [float(v.get("p95", 0)) for _, v in items]
        ys = list(range(len(items)))
        ax.barh(ys, p95, height=0.7, color="#f4b183", label="p95")
        ax.barh(ys, p50, height=0.4, color="#2f5597", label="p50")
        top = max(p95 + [1.0])
        for y, (_, v) in zip(ys, items):
            text = f"p50 {float(v.get('p50', 0)):.0f} / p95 {float(v.get('p95', 0)):.0f} {unit}"
            text += f" (n={int(v.get('n', 0))})"
            ax.text(float(v.get("p95", 0)) + top * 0.01, y, text, va="center", fontsize=7)
        ax.set_yticks(ys)
        ax.set_yticklabels(labels, fontsize=7, family="monospace")
        ax.invert_yaxis()
        ax.set_xlim(0, top * 1.45)
        ax.set_xlabel(f"latency ({unit})", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.legend(loc="lower right", fontsize=7, frameon=False)
        ax.grid(axis="x", alpha=0.3)
    suffix = f" (slowest {MAX_ROWS} of {MAX_ROWS + dropped})" if dropped else ""
    ax.set_title(title + suffix, fontsize=9)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def latency_chart_png(series: Mapping[str, list[float]]) -> bytes:
    """PNG bytes of the p50/p95 latency (ms) per endpoint or measure, from raw samples.

    An empty mapping gives a small "no latency samples" image, so callers need no special case.
    """
    rows = {name: TimingSeries(list(samples)).summary() for name, samples in series.items() if samples}
    return summary_chart_png(rows)


def latency_chart_data_uri(series: Mapping[str, list[float]]) -> str:
    """``data:image/png;base64,...`` of :func:`latency_chart_png` (self-contained, works offline)."""
    return png_data_uri(latency_chart_png(series))


def png_data_uri(png: bytes) -> str:
    """A ``data:`` URI for PNG bytes."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
