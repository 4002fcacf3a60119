"""The network codes: a configured host does not answer at all, or its TLS handshake fails.

A host that does not answer is HOST_UNREACHABLE only when nothing else explains it: when the API
answers and names that host's part as down (:func:`.deployment.dependency_down`), the probe is that
code's evidence instead.
"""

from __future__ import annotations

from .. import evidence as ev
from .. import tells as t
from ..evidence import TriageEvidence, host_of
from .base import Match, Matcher, exchanges_by_host, settings_by_host, where
from .deployment import dependency_down

__all__ = ["MATCHERS"]


#: What to check for each failure class, per host.
_NETWORK_FIX = {
    "dns": "the name does not resolve: create or fix its DNS record, or correct the URL setting",
    "refused": "nothing listens there: check the port and scheme in the URL and the balancer listener",
    "timeout": "packets are dropped or the service hangs: check security groups, firewalls and that the "
               "service runs",
    "connection": "the connection breaks: check the balancer listener and any proxy in between",
}


#: What a failure class means, as words that fit "Nothing answers at HOST (setting): ...".
_NO_ANSWER_WORDS = {
    "dns": "the name does not resolve",
    "refused": "connection refused",
    "timeout": "the connection timed out",
    "connection": "the connection broke",
}


def _host_unreachable(e: TriageEvidence) -> Match | None:
    settings = settings_by_host(e)
    parts, lines, fixes = [], [], []
    for host, exs in exchanges_by_host(e).items():
        if not exs or any(x.status is not None for x in exs) or any(x.error == "tls" for x in exs):
            continue
        first = next((x for x in exs if x.error in t.NO_ANSWER), None)
        if first is None:
            continue
        if dependency_down(e, settings[host]) is not None:
            continue  # the API answers and names this part as down: its own code, this probe its evidence
        what = _NO_ANSWER_WORDS.get(first.error or "", first.error or "no answer")
        if first.error == "timeout":
            what += f" after {first.elapsed_ms / 1000:.1f} s"
        parts.append(f"{host} ({', '.join(settings[host])}): {what} before any HTTP status")
        lines.append(first)
        fixes.append(f"{host}: {_NETWORK_FIX.get(first.error or '', 'check the host')}")
        keyed = e.probe(ev.PROXY_KEY)
        if keyed is not None and keyed.ok and not {"api-url", "tracking-uri"} & set(settings[host]):
            names = " / ".join(f"--hokusai-{s}" for s in settings[host])
            parts[-1] += f", while keyed requests through the proxy succeed ({where(keyed)} -> {keyed.status})"
            fixes[-1] = (f"{host}: the platform itself works, so the URL you configured is wrong: fix {names} "
                         "(and where it comes from: command line, HOKUSAI_* env or ini)")
    if not parts:
        return None
    return Match("Nothing answers at " + "; ".join(parts) + ".", lines, "; ".join(fixes) + ".")


def _tls_error(e: TriageEvidence) -> Match | None:
    bad = [x for exs in exchanges_by_host(e).values() for x in exs if x.status is None and x.error == "tls"]
    if not bad:
        return None
    hosts = sorted({host_of(x.url) for x in bad})
    return Match(f"The TLS handshake with {', '.join(hosts)} fails: {bad[0].error_detail or 'certificate error'}.",
                 bad[:3])


MATCHERS: dict[str, Matcher] = {
    "HOST_UNREACHABLE": _host_unreachable,
    "TLS_ERROR": _tls_error,
}
