"""The proxy mounts' lean ASGI path: the balancer hands ``/api/mlflow/*`` and ``/api/2.0/mlflow/*``
straight to the auth middleware and the proxy, without FastAPI's router.

Every proxied request used to walk FastAPI's middleware stack and its route table (a regex per
route) before reaching :func:`~.proxy.proxy_mount`; that was a measurable part of the second
HTTP hop's cost (bench/RESULTS.md, ``proxy``). The behaviour is the same as through the router:
the same layers in the same order (server-error guard, :class:`~.middleware.AuthMiddleware`, the
proxy), the same path parameter (the decoded path after ``{mount}/``), and any method the route
does not list still goes through FastAPI (its 405).
"""

from __future__ import annotations

from starlette.middleware.errors import ServerErrorMiddleware
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from .api_state import ApiRuntime
from .middleware import AuthMiddleware
from .proxy import proxy_mount

__all__ = ["ProxyFastPath"]


class ProxyFastPath:
    """Dispatch to the proxy mounts directly; :meth:`app_for` says whether a request is one of theirs."""

    def __init__(self, runtime: ApiRuntime, mounts: tuple[str, ...], methods: frozenset[str]) -> None:
        self._methods = methods
        self._mounts = tuple((mount, mount + "/", self._build(runtime, mount)) for mount in mounts)

    @staticmethod
    def _build(runtime: ApiRuntime, mount: str) -> ASGIApp:
        cut = len(mount) + 1

        async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
            request = Request(scope, receive)
            response = await proxy_mount(runtime, request, mount, scope["path"][cut:])
            await response(scope, receive, send)

        return ServerErrorMiddleware(AuthMiddleware(proxy, runtime=runtime))

    def app_for(self, scope: Scope) -> ASGIApp | None:
        """The app for this HTTP request if it is a proxied one, else None (FastAPI serves it)."""
        if scope["method"] not in self._methods:
            return None
        path: str = scope["path"]
        for _mount, prefix, app in self._mounts:
            if path.startswith(prefix):
                return app
        return None
