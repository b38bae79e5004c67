"""Our own aiohttp per-connection handler class on a Faust app's web server.

**Defect** (aiohttp 3.14.5 under faust-streaming 0.15.3): a request aiohttp cannot parse
(a header over its 8,190-byte limit, a malformed request line, a bad method) never
reaches any middleware: ``RequestHandler.handle_error`` answers it with plain text and
logs the exception, whose message quotes the first ~100 bytes of the offending line,
which for an oversized ``Authorization`` header is the bearer token. aiohttp has no hook
for its parse errors and no setting for the handler class (``Server.__call__`` builds a
``RequestHandler`` by name), and Faust builds the ``AppRunner`` in its web driver's
constructor (``faust.web.drivers.aiohttp.Web._runner``).

**Workaround**: :func:`install_request_handler` replaces Faust's unstarted runner by one
whose server builds the given ``RequestHandler`` subclass (``alpha_panda/http_errors.py``'s
``JsonErrorRequestHandler``, which answers JSON and logs no raw bytes). The server is
aiohttp's own object, same state, only its class changes to add ``__call__``.

**Versions checked**: aiohttp 3.14.5, faust-streaming 0.15.3, at import, with the
source fragments relied on (``Server.__call__`` builds ``RequestHandler``, parse errors
go through ``handle_error``, Faust keeps its runner in ``Web._runner``).

**Proof it is still needed**: ``tests/unit/test_http_errors.py`` sends an oversized
header to a real socket of a stage app built by the factory and fails if plain text
comes back or the token reaches a log.
"""

from __future__ import annotations

from typing import Any

from aiohttp.web_protocol import RequestHandler
from aiohttp.web_runner import AppRunner
from aiohttp.web_server import Server
from faust.web.drivers.aiohttp import Web as FaustWeb

from alpha_panda.workarounds._versions import require_source, require_versions

CHECKED_VERSIONS = {"aiohttp": "3.14.5", "faust-streaming": "0.15.3"}


def _check() -> None:
    require_versions(__name__, CHECKED_VERSIONS)
    require_source(__name__, Server.__call__, "RequestHandler(self, loop=self._loop")
    require_source(__name__, RequestHandler._make_error_handler, "self.handle_error(")
    require_source(__name__, FaustWeb.__init__, "self._runner: AppRunner = AppRunner(")


_check()


class _HandlerServer(Server):
    _handler_class: type[RequestHandler]

    def __call__(self) -> RequestHandler:
        kwargs: Any = self._kwargs
        return self._handler_class(self, loop=self._loop, **kwargs)


class HandlerSwapAppRunner(AppRunner):
    """aiohttp's ``AppRunner`` whose server builds ``handler_class`` per connection."""

    def __init__(self, app: Any, handler_class: type[RequestHandler], **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._handler_class = handler_class

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _HandlerServer
        server._handler_class = self._handler_class  # type: ignore[attr-defined]
        return server


def install_request_handler(app: Any, handler_class: type[RequestHandler]) -> None:
    """Serve the Faust ``app``'s web port with ``handler_class``; before the worker starts."""
    web = app.web
    runner = web._runner
    if not isinstance(runner, AppRunner) or runner.server is not None:
        raise RuntimeError("Faust's web runner is not the expected unstarted AppRunner")
    web._runner = HandlerSwapAppRunner(web.web_app, handler_class, access_log=None)
