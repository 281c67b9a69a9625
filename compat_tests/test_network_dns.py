"""The embedded DNS of user networks (127.0.0.11 in each container), through the stock CLI and
docker-py: names, aliases, ids and hostnames resolve on the shared network only, follow
containers as they come, go, connect and disconnect; other names are relayed to the host's
resolver, here a tiny DNS server the test runs on the host's loopback (a loopback resolver the
containers could not reach themselves). No query leaves the machine: the daemon's resolv.conf
names only that server."""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import dns.message
import dns.query
import dns.rcode
import dns.reversename
import dns.rrset
import pytest

from conftest import DRIVERS, require_root
from tests.daemon import Daemon, leftover_links, leftover_rules, wait_until

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"
OUTSIDE = "outside.test."
OUTSIDE_IP = "192.0.2.7"  # documentation range: only ever an answer, never contacted


class FakeUpstream:
    """A DNS server on a loopback address, port 53, UDP and TCP: `outside.test` has an address,
    every other name is NXDOMAIN. Counts the questions it was asked."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self.asked: list[str] = []
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind((addr, 53))
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind((addr, 53))
        self.tcp.listen(8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, data: bytes) -> bytes:
        q = dns.message.from_wire(data)
        self.asked.append(q.question[0].name.to_text().lower())
        r = dns.message.make_response(q)
        if q.question[0].name.to_text().lower() == OUTSIDE:
            if q.question[0].rdtype == 1:
                r.answer.append(dns.rrset.from_text(OUTSIDE, 60, "IN", "A", OUTSIDE_IP))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()

    def _serve(self) -> None:
        while not self.stop.is_set():
            ready, _, _ = select.select([self.udp, self.tcp], [], [], 0.2)
            for s in ready:
                if s is self.udp:
                    data, peer = self.udp.recvfrom(4096)
                    self.udp.sendto(self._answer(data), peer)
                else:
                    conn, _ = self.tcp.accept()
                    with conn:
                        conn.settimeout(5)
                        n = struct.unpack("!H", conn.recv(2))[0]
                        out = self._answer(conn.recv(n))
                        conn.sendall(struct.pack("!H", len(out)) + out)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.udp.close()
        self.tcp.close()


@pytest.fixture(scope="module")
def dnsd(busybox_tar: str) -> Iterator[tuple[Daemon, FakeUpstream]]:
    """A daemon whose host resolv.conf names only the test's own loopback resolver."""
    require_root()
    d = Daemon(DRIVERS[0])
    upstream = FakeUpstream(f"127.53.{d.net_slot}.1")
    resolv = os.path.join(d.base, "host-resolv.conf")
    with open(resolv, "w") as f:
        f.write(f"nameserver {upstream.addr}\noptions timeout:2\n")
    d.extra_env = {"BOCKER_RESOLV_CONF": resolv}
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        d.out("network", "create", "app")
        d.out("network", "create", "other")
        yield d, upstream
        d.clean_containers()
        d.out("network", "rm", "app", "other")
        assert d.stop() == 0, d.log()
        assert leftover_links(d) == [] and leftover_rules(d.chain) == []
    finally:
        d.cleanup()
        upstream.close()


@pytest.fixture
def dd(dnsd: tuple[Daemon, FakeUpstream]) -> Iterator[Daemon]:
    yield dnsd[0]
    dnsd[0].clean_containers()


def _ip(d: Daemon, ref: str, net: str) -> str:
    return str(json.loads(d.out("inspect", ref))[0]["NetworkSettings"]["Networks"][net]["IPAddress"])


def _lookup(d: Daemon, name: str, net: str = "app") -> tuple[int, str]:
    r = d.docker("run", "--rm", "--network", net, "busybox", "nslookup", name)
    return r.returncode, r.stdout + r.stderr


def _in_netns(key: str, fn: Any) -> Any:
    """fn() in a thread that entered the container's network namespace."""
    import ctypes

    box: dict[str, Any] = {}

    def run() -> None:
        fd = os.open(key, os.O_RDONLY)
        try:
            if ctypes.CDLL(None, use_errno=True).setns(fd, 0x40000000) != 0:
                raise OSError(ctypes.get_errno(), "setns")
        finally:
            os.close(fd)
        try:
            box["v"] = fn()
        except BaseException as e:
            box["e"] = e

    t = threading.Thread(target=run)
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]


def test_names_aliases_ids_and_hostname_resolve(dd: Daemon) -> None:
    dd.out(
        "run", "-d", "--name", "db", "--hostname", "dbhost", "--network", "app", "--network-alias", "database",
        "busybox", "sh", "-c", HTTPD,
    )  # fmt: skip
    ip = _ip(dd, "db", "app")
    short = json.loads(dd.out("inspect", "db"))[0]["Id"][:12]
    script = (
        "cat /etc/resolv.conf; for n in db database DB.app " + short + " dbhost; do nslookup $n; done; "
        "ping -c1 -W5 db && wget -qO- http://database/index.html"
    )
    out = dd.out("run", "--rm", "--network", "app", "busybox", "sh", "-c", script)
    assert "nameserver 127.0.0.11" in out and "options" in out and "ndots:0" in out
    assert out.count(f"Address: {ip}") >= 5, out
    assert "1 packets received" in out and "hello-dbhost" in out
    # docker-py, by alias on the network.
    got = dd.client.containers.run("busybox", ["nslookup", "database"], network="app", remove=True)
    assert ip in got.decode()


def test_name_on_another_network_is_not_resolved(dd: Daemon, dnsd: tuple[Daemon, FakeUpstream]) -> None:
    dd.out("run", "-d", "--name", "hidden", "--network", "other", "busybox", "sleep", "300")
    code, out = _lookup(dd, "hidden")
    assert code != 0 and "NXDOMAIN" in out, out
    assert "hidden." in dnsd[1].asked  # relayed, the upstream said no
    code, out = _lookup(dd, "hidden", "other")
    assert code == 0 and _ip(dd, "hidden", "other") in out


def test_names_follow_containers_and_connections(dd: Daemon) -> None:
    dd.out("run", "-d", "--name", "temp", "--network", "app", "busybox", "sleep", "300")
    assert _ip(dd, "temp", "app") in _lookup(dd, "temp")[1]
    dd.out("rm", "-f", "temp")
    code, out = _lookup(dd, "temp")
    assert code != 0 and "NXDOMAIN" in out
    # A container of the default bridge connected with an alias, then disconnected.
    dd.out("run", "-d", "--name", "late", "busybox", "sleep", "300")
    assert _lookup(dd, "latecomer")[0] != 0
    dd.out("network", "connect", "--alias", "latecomer", "app", "late")
    assert _ip(dd, "late", "app") in _lookup(dd, "latecomer")[1]
    dd.out("network", "disconnect", "app", "late")
    assert _lookup(dd, "latecomer")[0] != 0
    # Stopped: gone; started again: back.
    dd.out("run", "-d", "--name", "cycle", "--network", "app", "busybox", "sleep", "300")
    dd.out("stop", "-t", "0", "cycle")
    assert _lookup(dd, "cycle")[0] != 0
    dd.out("start", "cycle")
    assert _ip(dd, "cycle", "app") in _lookup(dd, "cycle")[1]


def test_link_on_user_network_is_an_alias_for_the_linker_only(dd: Daemon) -> None:
    dd.out("run", "-d", "--name", "target", "--network", "app", "busybox", "sleep", "300")
    ip = _ip(dd, "target", "app")
    out = dd.out("run", "--rm", "--network", "app", "--link", "target:tgt", "busybox", "nslookup", "tgt")
    assert f"Address: {ip}" in out
    assert _lookup(dd, "tgt")[0] != 0


def test_other_names_are_relayed_to_the_hosts_loopback_resolver(dd: Daemon) -> None:
    out = dd.out("run", "--rm", "--network", "app", "busybox", "nslookup", "outside.test")
    assert OUTSIDE_IP in out
    # Straight at 127.0.0.11 from the container's namespace: UDP and TCP, relayed and local
    # answers, AAAA of a container (no record, no error), and the reverse name of its address.
    dd.out("run", "-d", "--name", "probe", "--network", "app", "--network-alias", "pr", "busybox", "sleep", "300")
    info = json.loads(dd.out("inspect", "probe"))[0]
    ip = info["NetworkSettings"]["Networks"]["app"]["IPAddress"]

    def ask() -> list[dns.message.Message]:
        out = [
            dns.query.udp(dns.message.make_query(OUTSIDE, "A"), "127.0.0.11", timeout=10),
            dns.query.tcp(dns.message.make_query(OUTSIDE, "A"), "127.0.0.11", timeout=10),
            dns.query.tcp(dns.message.make_query("pr.", "A"), "127.0.0.11", timeout=10),
            dns.query.udp(dns.message.make_query("pr.", "AAAA"), "127.0.0.11", timeout=10),
        ]
        rev = dns.message.make_query(dns.reversename.from_address(ip), "PTR")
        return [*out, dns.query.udp(rev, "127.0.0.11", timeout=10)]

    udp, tcp, local, aaaa, ptr = _in_netns(info["NetworkSettings"]["SandboxKey"], ask)
    assert udp.answer[0][0].to_text() == OUTSIDE_IP and tcp.answer[0][0].to_text() == OUTSIDE_IP
    assert local.answer[0][0].to_text() == ip
    assert aaaa.rcode() == dns.rcode.NOERROR and not aaaa.answer
    assert ptr.answer[0][0].to_text() == "probe.app."


def test_dns_sockets_closed_on_rm(dd: Daemon) -> None:
    assert dd.proc is not None
    fd_dir = f"/proc/{dd.proc.pid}/fd"

    def sockets() -> set[str]:
        out = set()
        for fd in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                link = os.readlink(os.path.join(fd_dir, fd))
                if link.startswith("socket:"):
                    out.add(link)
        return out

    # Compared by inode, not counted: the CLI's own connections come and go meanwhile.
    before = sockets()
    dd.out("run", "-d", "--name", "sock", "--network", "app", "busybox", "sleep", "300")
    new = sockets() - before
    assert len(new) >= 2  # the resolver's UDP and TCP sockets (and maybe a CLI connection)
    dd.out("rm", "-f", "sock")
    wait_until(lambda: not (new & sockets()), 20, "the DNS sockets to be closed")


def test_default_bridge_keeps_host_resolvers(dd: Daemon) -> None:
    out = dd.out("run", "--rm", "busybox", "cat", "/etc/resolv.conf")
    assert "127.0.0.11" not in out


def _file(d: Daemon, ref: str, path: str) -> str:
    return d.out("exec", ref, "cat", path)


def test_connect_to_user_network_switches_to_the_embedded_dns(dd: Daemon) -> None:
    """A container started on the default bridge and connected to a user network: its
    resolv.conf names the embedded DNS from then on (dockerd's rebuildDNS), so names on that
    network resolve from inside; /etc/hosts gets a line for the new address. Disconnected: the
    resolver stays (dockerd), only that network's hosts line goes."""
    dd.out("run", "-d", "--name", "joiner", "--hostname", "jh", "busybox", "sleep", "300")
    dd.out("run", "-d", "--name", "peer", "--network", "app", "busybox", "sleep", "300")
    assert "127.0.0.11" not in _file(dd, "joiner", "/etc/resolv.conf")
    bridge_ip = _ip(dd, "joiner", "bridge")
    dd.out("network", "connect", "app", "joiner")
    app_ip = _ip(dd, "joiner", "app")
    assert _file(dd, "joiner", "/etc/resolv.conf") == "nameserver 127.0.0.11\noptions timeout:2 ndots:0\n"
    hosts = _file(dd, "joiner", "/etc/hosts").splitlines()
    assert hosts[-2:] == [f"{bridge_ip}\tjh", f"{app_ip}\tjh"]
    out = dd.out("exec", "joiner", "nslookup", "peer")
    assert f"Address: {_ip(dd, 'peer', 'app')}" in out
    assert OUTSIDE_IP in dd.out("exec", "joiner", "nslookup", "outside.test")
    dd.out("network", "disconnect", "app", "joiner")
    assert _file(dd, "joiner", "/etc/resolv.conf") == "nameserver 127.0.0.11\noptions timeout:2 ndots:0\n"
    hosts = _file(dd, "joiner", "/etc/hosts").splitlines()
    assert hosts[-1] == f"{bridge_ip}\tjh" and app_ip not in "\n".join(hosts)
    assert OUTSIDE_IP in dd.out("exec", "joiner", "nslookup", "outside.test")
    # Started again while on both networks: a line for each, embedded DNS from the start.
    dd.out("network", "connect", "app", "joiner")
    dd.out("restart", "-t", "0", "joiner")
    hosts = _file(dd, "joiner", "/etc/hosts").splitlines()
    assert hosts[-2:] == [f"{_ip(dd, 'joiner', 'bridge')}\tjh", f"{_ip(dd, 'joiner', 'app')}\tjh"]
    assert "nameserver 127.0.0.11" in _file(dd, "joiner", "/etc/resolv.conf")
