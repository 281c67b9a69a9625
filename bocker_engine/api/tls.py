"""TCP+TLS listening with half-close, for hijacked streams over TLS.

The docker CLI ends stdin on a hijacked connection with tls.Conn.CloseWrite: a TLS close_notify
while it keeps reading the output. asyncio's SSL protocol answers any close_notify by shutting
the whole connection down ("returning true from eof_received() has no effect when using ssl"),
so `docker run` over TLS would lose everything after the client closed stdin. This protocol
lets the application keep writing when its eof_received() asks to, as it can on plain TCP; the
connection then ends when the application closes it.
"""

from __future__ import annotations

import asyncio
import ssl
from asyncio import sslproto
from typing import Any

from aiohttp import web


class HalfCloseSSLProtocol(sslproto.SSLProtocol):
    _keep_open_after_peer_eof = False

    def _call_eof_received(self) -> None:
        me: Any = self  # asyncio's private state, untyped in typeshed
        if me._app_state == sslproto.AppProtocolState.STATE_CON_MADE:
            me._app_state = sslproto.AppProtocolState.STATE_EOF
            try:
                keep_open = me._app_protocol.eof_received()
            except Exception as ex:
                me._fatal_error(ex, "Error calling eof_received()")
                return
            # The read path calls _start_shutdown() right after this; skip that one call.
            self._keep_open_after_peer_eof = bool(keep_open)

    def _start_shutdown(self) -> None:
        if self._keep_open_after_peer_eof:
            self._keep_open_after_peer_eof = False
            return
        super()._start_shutdown()


class TLSSite(web.BaseSite):
    """Like aiohttp's TCPSite with an ssl_context, but with HalfCloseSSLProtocol."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, ssl_context: ssl.SSLContext) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._ctx = ssl_context

    @property
    def name(self) -> str:
        return f"https://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        waiter: Any = None  # no one waits for the handshake of accepted connections

        def factory() -> HalfCloseSSLProtocol:
            return HalfCloseSSLProtocol(loop, server(), self._ctx, waiter, server_side=True)

        self._server = await loop.create_server(factory, self._host, self._port, reuse_address=True)
