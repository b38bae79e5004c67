"""Forward a single-portfolio request to the portfolio-manager worker that owns the key.

Used instead of Faust's ``@app.table_route``, which hashes the JSON-serialized table key
and so picks the wrong worker for most keys (alpha_panda/ownership.py). A forwarded
request carries :data:`ROUTED_HEADER`; a worker that receives one answers itself or
refuses with a 503, so a request never bounces between workers whose views of the
assignment differ for a moment during a rebalance.
"""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp import web as aiohttp_web
from yarl import URL

ROUTED_HEADER = "X-Alpha-Panda-Routed"
FORWARD_TIMEOUT_S = 5.0
# Request headers the owner needs (the token); nothing else of the client's is passed on.
_FORWARDED_REQUEST_HEADERS = ("Authorization", "Accept")
_KEPT_RESPONSE_HEADERS = ("Retry-After", "Cache-Control", "X-Content-Type-Options")


class OwnerUnreachableError(Exception):
    """The owning worker did not answer (it may have just died; the group will notice)."""


async def forward(session: Any, owner: URL, request: aiohttp_web.Request) -> aiohttp_web.Response:
    """``request`` sent to ``owner`` (same path and query); its answer, as it came."""
    target = URL.build(
        scheme="http",
        host=str(owner.host),
        port=owner.port,
        path=request.rel_url.path,
        query_string=request.rel_url.query_string,
    )
    headers = {h: v for h in _FORWARDED_REQUEST_HEADERS if (v := request.headers.get(h))}
    headers[ROUTED_HEADER] = "1"
    try:
        async with session.get(
            target, headers=headers, timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT_S)
        ) as response:
            body = await response.read()
            kept = {h: v for h in _KEPT_RESPONSE_HEADERS if (v := response.headers.get(h))}
            return aiohttp_web.Response(
                body=body,
                status=response.status,
                content_type=response.content_type,
                headers=kept,
            )
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        raise OwnerUnreachableError(f"{type(exc).__name__}: {exc}"[:300]) from None
