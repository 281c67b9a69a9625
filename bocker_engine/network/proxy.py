"""The userland proxy of published ports, in the daemon's event loop.

DNAT covers traffic to the host's own addresses from outside and from the host, but not to
127.0.0.1 (the kernel does not route loopback-sourced packets out of lo) nor from containers of
the same bridge to the host: those reach the proxy, which listens on the published address and
relays to the container. In the daemon rather than a process per port (docker-proxy): binding
here reports a busy port at once with no process to start, track and restore, costs no memory
per port, and asyncio's transports relay with kernel-sized reads and proper flow control; the
price is that with live restore connections through the proxy break while bockerd restarts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
from typing import Any

from bocker_engine.errors import System

log = logging.getLogger(__name__)
UDP_IDLE = 90.0


class _Half(asyncio.Protocol):
    """One side of a relayed TCP connection; `peer` is the other side."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.pending: list[bytes] = []
        self.eof = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            if not self.peer.transport.is_closing():  # else the peer is gone: drop, as asyncio does
                self.peer.transport.write(data)
        else:
            self.pending.append(data)

    def eof_received(self) -> bool:
        self.eof = True
        if self.peer is not None and self.peer.transport is not None:
            if not self.peer.transport.is_closing() and self.peer.transport.can_write_eof():
                self.peer.transport.write_eof()
            if self.peer.eof:
                self.peer.transport.close()
                if self.transport is not None:
                    self.transport.close()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()
        self.transport = None

    # Flow control: when the other side's send buffer fills up, stop reading this side.
    def pause_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()


class _Client(_Half):
    def __init__(self, target: tuple[str, int]) -> None:
        super().__init__()
        self.target = target

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        transport.pause_reading()  # type: ignore[attr-defined]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, up = await loop.create_connection(_Half, *self.target)
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None:
            if up.transport is not None:
                up.transport.close()
            return
        up.peer, self.peer = self, up
        # What came before the upstream connection (uvloop starts reading before the pause in
        # connection_made takes effect), then the client's EOF if that came too.
        assert up.transport is not None
        for data in self.pending:
            up.transport.write(data)
        self.pending.clear()
        if self.eof and up.transport.can_write_eof():
            up.transport.write_eof()
        self.transport.resume_reading()


def _bind(proto: str, host_ip: str, host_port: int) -> socket.socket:
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    s = socket.socket(socket.AF_INET, kind)
    try:
        if proto == "tcp":
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host_ip, host_port))
        if proto == "tcp":
            s.listen(1024)
        s.setblocking(False)
    except OSError as e:
        s.close()
        what = "address already in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e)).lower()
        raise System(f"Error starting userland proxy: listen {proto}4 {host_ip}:{host_port}: bind: {what}") from None
    return s


class _UDPRelay(asyncio.DatagramProtocol):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None
        self.flows: dict[Any, tuple[asyncio.DatagramTransport, float]] = {}
        self.reaper: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._schedule()

    def _schedule(self) -> None:
        self.reaper = asyncio.get_running_loop().call_later(UDP_IDLE / 3, self._reap)

    def _reap(self) -> None:
        now = time.monotonic()
        for addr, (t, seen) in list(self.flows.items()):
            if now - seen > UDP_IDLE:
                t.close()
                del self.flows[addr]
        self._schedule()

    def datagram_received(self, data: bytes, addr: Any) -> None:
        flow = self.flows.get(addr)
        if flow is not None:
            flow[0].sendto(data)
            self.flows[addr] = (flow[0], time.monotonic())
            return
        asyncio.get_running_loop().create_task(self._open(data, addr))

    async def _open(self, data: bytes, addr: Any) -> None:
        loop = asyncio.get_running_loop()
        relay = self

        class Back(asyncio.DatagramProtocol):
            def datagram_received(self, reply: bytes, _from: Any) -> None:
                if relay.transport is not None:
                    relay.transport.sendto(reply, addr)

        with contextlib.suppress(OSError):
            t, _ = await loop.create_datagram_endpoint(Back, remote_addr=self.target)
            self.flows[addr] = (t, time.monotonic())
            t.sendto(data)

    def close(self) -> None:
        if self.reaper is not None:
            self.reaper.cancel()
        for t, _ in self.flows.values():
            t.close()
        self.flows.clear()
        if self.transport is not None:
            self.transport.close()


class Proxy:
    """One published port: host_ip:host_port (tcp or udp) relayed to target."""

    def __init__(self, proto: str, host_ip: str, host_port: int, target: tuple[str, int]) -> None:
        self.proto, self.host_ip, self.host_port, self.target = proto, host_ip, host_port, target
        self._server: asyncio.AbstractServer | None = None
        self._udp: _UDPRelay | None = None
        self._sock: socket.socket | None = None

    def bind(self) -> None:
        """Take the port now (raises dockerd's message when it is busy)."""
        self._sock = _bind(self.proto, self.host_ip, self.host_port)

    async def start(self) -> None:
        if self._sock is None:
            self.bind()
        loop = asyncio.get_running_loop()
        sock, self._sock = self._sock, None
        assert sock is not None
        if self.proto == "tcp":
            target = self.target
            self._server = await loop.create_server(lambda: _Client(target), sock=sock)
        else:
            _, self._udp = await loop.create_datagram_endpoint(lambda: _UDPRelay(self.target), sock=sock)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            self._server.close()
            self._server = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
