"""The embedded DNS of user networks: a resolver at 127.0.0.11:53 inside each container's
network namespace, like dockerd's.

The daemon opens one UDP and one TCP socket per container, from a thread that entered the
container's namespace (a socket stays in the namespace it was made in), and serves them from its
event loop: no process, no iptables redirect inside the container (the whole of 127.0.0.0/8 is
local on lo, so 127.0.0.11 needs no address of its own). Names of containers on the container's
user networks are answered from the daemon's own records; everything else is relayed as is to
the upstream resolvers (the container's --dns, else the host's), from the daemon on the host
side, so a loopback resolver of the host (systemd-resolved, dnsmasq) works too.

dnspython parses and builds the messages: a well-kept, typed library that gets the wire format's
corners (name compression, EDNS, reverse names) right; relayed queries are forwarded as raw bytes
so nothing the client asked for is lost in a re-encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.reversename
import dns.rrset

from bocker_engine.transport import write_or_reset

log = logging.getLogger(__name__)

ADDRESS = "127.0.0.11"
TTL = 600
UPSTREAM_TIMEOUT = 4.0
MAX_INFLIGHT = 256  # relayed queries per container at once (dockerd: 1024 for all)
TCP_IDLE = 10.0


class Backend(Protocol):
    """What the resolver asks the network service, for the container `cid`."""

    def dns_lookup(self, cid: str, name: str) -> list[str] | None:
        """The addresses of `name` (lower case, no final dot); None when the name is not ours."""

    def dns_reverse(self, cid: str, ip: str) -> str | None:
        """The name of a container address on the container's networks, if any."""

    def dns_upstreams(self, cid: str) -> list[str]:
        """The resolvers to relay other names to."""


def answer(backend: Backend, cid: str, query: dns.message.Message) -> dns.message.Message | None:
    """The reply to a query we answer ourselves, or None to relay it."""
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        return None
    q = query.question[0]
    if q.rdclass != dns.rdataclass.IN:
        return None
    if q.rdtype == dns.rdatatype.PTR:
        try:
            ip = dns.reversename.to_address(q.name)
        except (dns.exception.SyntaxError, ValueError):
            return None
        target = backend.dns_reverse(cid, ip)
        if target is None:
            return None
        r = _response(query)
        r.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "PTR", [target.rstrip(".") + "."]))
        return r
    ips = backend.dns_lookup(cid, q.name.to_text(omit_final_dot=True).lower())
    if ips is None:
        return None
    r = _response(query)
    if q.rdtype in (dns.rdatatype.A, dns.rdatatype.ANY) and ips:
        r.answer.append(dns.rrset.from_text_list(q.name, TTL, "IN", "A", ips))
    # AAAA and the other types of a name we know: no records, no error (no IPv6 yet).
    return r


def _response(query: dns.message.Message) -> dns.message.Message:
    r = dns.message.make_response(query)
    r.flags |= dns.flags.RA | dns.flags.AA
    return r


def _failure(data: bytes) -> bytes | None:
    """SERVFAIL for a query we could neither answer nor relay (None when unparsable)."""
    try:
        q = dns.message.from_wire(data)
    except Exception:
        return None
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.SERVFAIL)
    return r.to_wire()


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.server.spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: tuple[str, int]) -> None:
        out = await self.server.handle(data, "udp")
        if out is not None and self.transport is not None:
            self.transport.sendto(out, addr)


class Server:
    """One container's resolver: its two sockets and the queries in flight."""

    def __init__(self, backend: Backend, cid: str) -> None:
        self.backend = backend
        self.cid = cid
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers: set[asyncio.StreamWriter] = set()

    async def start(self, udp_sock: socket.socket, tcp_sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            self.udp, _ = await loop.create_datagram_endpoint(lambda: _Udp(self), sock=udp_sock)
            self.tcp = await asyncio.start_server(self._tcp_client, sock=tcp_sock)
        except BaseException:
            self.close()
            udp_sock.close()
            tcp_sock.close()
            raise

    def spawn(self, coro: object) -> None:
        if len(self.tasks) >= MAX_INFLIGHT:
            coro.close()  # type: ignore[attr-defined]
            return
        t: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def handle(self, data: bytes, proto: str) -> bytes | None:
        try:
            query = dns.message.from_wire(data)
        except Exception:
            return None  # not DNS: dockerd drops it too
        try:
            r = answer(self.backend, self.cid, query)
        except Exception:
            log.exception("embedded DNS: cannot answer %s", query.question)
            r = None
        if r is not None:
            return r.to_wire(max_size=65535 if proto == "tcp" else _udp_size(query))
        for server in self.backend.dns_upstreams(self.cid):
            try:
                return await asyncio.wait_for(_relay(server, data, proto), UPSTREAM_TIMEOUT)
            except (OSError, TimeoutError, asyncio.IncompleteReadError) as e:
                log.debug("embedded DNS: upstream %s: %s", server, e)
        return _failure(data)

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                data = await asyncio.wait_for(reader.readexactly(struct.unpack("!H", head)[0]), TCP_IDLE)
                out = await self.handle(data, "tcp")
                if out is None:
                    break
                write_or_reset(writer, struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    def close(self) -> None:
        if self.udp is not None:
            self.udp.close()
            self.udp = None
        if self.tcp is not None:
            self.tcp.close()
            self.tcp = None
        for w in list(self.writers):
            w.close()
        for t in list(self.tasks):
            t.cancel()


def _udp_size(query: dns.message.Message) -> int:
    return max(512, query.payload) if query.edns >= 0 else 512


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, qid: bytes) -> None:
        self.qid = qid
        self.done: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if data[:2] == self.qid and not self.done.done():
            self.done.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.done.done():
            self.done.set_exception(exc)


async def _relay(server: str, data: bytes, proto: str) -> bytes:
    """The upstream's reply to the raw query (its id kept: ours is the client's)."""
    host, port = _host_port(server)
    if proto == "tcp":
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(struct.pack("!H", len(data)) + data)
            await writer.drain()
            size = struct.unpack("!H", await reader.readexactly(2))[0]
            return await reader.readexactly(size)
        finally:
            writer.close()
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, proto_ = await loop.create_datagram_endpoint(
        lambda: _Reply(data[:2]), remote_addr=(host, port), family=family
    )
    try:
        transport.sendto(data)
        return await proto_.done
    finally:
        transport.close()


def _host_port(server: str) -> tuple[str, int]:
    """`1.2.3.4`, `[::1]:5353` or `1.2.3.4:5353` (the port is for tests; resolv.conf has none)."""
    if server.startswith("["):
        host, _, rest = server[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else 53
    if server.count(":") == 1:
        host, _, port = server.partition(":")
        return host, int(port)
    return server, 53


def open_sockets() -> tuple[socket.socket, socket.socket]:
    """The UDP and TCP sockets on 127.0.0.11:53 of the namespace the calling thread is in."""
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        udp.bind((ADDRESS, 53))
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind((ADDRESS, 53))
        tcp.listen(64)
        udp.setblocking(False)
        tcp.setblocking(False)
    except BaseException:
        udp.close()
        tcp.close()
        raise
    return udp, tcp


with contextlib.suppress(Exception):
    # dnspython builds its tables lazily on first use: do it at import, not in the first query.
    dns.message.make_query("warm.up.", "A")
