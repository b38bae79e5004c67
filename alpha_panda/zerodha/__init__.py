"""Zerodha Kite Connect v3: our own asyncio client (REST + ticker) and a local Kite server.

The `kiteconnect` PyPI package is not used at run time: importing it installs Twisted's global
reactor and its REST client is synchronous. `ticker_protocol` is pure (bytes in, dataclasses
out); `rest` and `ticker` speak to Kite over aiohttp; `fake_server` is the local Kite server the
tests and `alpha-panda zerodha fake` run. Nothing here imports Faust.
"""
