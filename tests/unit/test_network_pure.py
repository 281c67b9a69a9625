"""Pure logic of networking: IPAM, port requests and the allocator, /etc files."""

from __future__ import annotations

import ipaddress
import os

import dns.message
import dns.rcode
import dns.reversename
import pytest

from bocker_engine.errors import Conflict, InvalidParameter
from bocker_engine.network import dns as bdns
from bocker_engine.network import etcfiles, ipam
from bocker_engine.network import ports as portmod
from bocker_engine.network.links import hosts_names, link_env, parse_link

NET = ipaddress.IPv4Network("10.9.0.0/29")
GW = ipaddress.IPv4Address("10.9.0.1")


def test_ipam_hands_out_in_order_skipping_gateway_and_edges(tmp_path) -> None:
    pool = ipam.Pool.load(str(tmp_path / "p.json"), NET, GW)
    got = [pool.allocate(f"e{i}") for i in range(5)]
    assert got == ["10.9.0.2", "10.9.0.3", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(Conflict):
        pool.allocate("full")


def test_ipam_persists_and_never_duplicates_across_restarts(tmp_path) -> None:
    path = str(tmp_path / "p.json")
    pool = ipam.Pool.load(path, NET, GW)
    a = pool.allocate("a")
    again = ipam.Pool.load(path, NET, GW)
    b = again.allocate("b")
    assert a != b
    again.release_owner("a")
    # The released address is not reused at once (next free after the last one).
    assert again.allocate("c") not in (a, b)
    assert not os.path.exists(path + f".tmp-{os.getpid()}")


def test_ipam_wanted_address(tmp_path) -> None:
    pool = ipam.Pool.load(str(tmp_path / "p.json"), NET, GW)
    assert pool.allocate("a", "10.9.0.5") == "10.9.0.5"
    with pytest.raises(Conflict):
        pool.allocate("b", "10.9.0.5")
    with pytest.raises(InvalidParameter):
        pool.allocate("b", "10.8.0.5")


def test_ipam_keep_only_drops_dead_owners(tmp_path) -> None:
    pool = ipam.Pool.load(str(tmp_path / "p.json"), NET, GW)
    pool.allocate("live")
    pool.allocate("dead")
    pool.keep_only({"live"})
    assert list(ipam.Pool.load(pool.path, NET, GW).allocated.values()) == ["live"]


def test_pools_and_subnet_choice() -> None:
    pools = ipam.parse_pools(["base=10.10.0.0/16,size=24", {"base": "10.11.0.0/16", "size": 24}])
    assert pools[0] == (ipaddress.IPv4Network("10.10.0.0/16"), 24)
    taken = [ipaddress.IPv4Network("10.10.0.0/24"), ipaddress.IPv4Network("10.10.1.0/25")]
    assert ipam.pick_subnet(pools, taken) == ipaddress.IPv4Network("10.10.2.0/24")
    with pytest.raises(InvalidParameter):
        ipam.parse_pools(["base=10.10.0.0/16"])


def test_mac_like_dockerd() -> None:
    assert ipam.mac_for("172.17.0.2") == "02:42:ac:11:00:02"


def test_port_requests() -> None:
    hc = {
        "PortBindings": {"80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "127.0.0.1"}]},
        "PublishAllPorts": True,
    }
    reqs = portmod.requests(hc, {"80/tcp": {}, "443/tcp": {}})
    assert portmod.Request("tcp", "0.0.0.0", 8080, 8080, 80) in reqs
    assert portmod.Request("udp", "127.0.0.1", 0, 0, 53) in reqs
    assert portmod.Request("tcp", "0.0.0.0", 0, 0, 443) in reqs
    assert len(reqs) == 3
    with pytest.raises(InvalidParameter):
        portmod.requests({"PortBindings": {"80/xyz": None}}, None)
    with pytest.raises(InvalidParameter):
        portmod.requests({"PortBindings": {"80/tcp": [{"HostPort": "99999"}]}}, None)


def test_allocator_conflicts() -> None:
    a = portmod.Allocator(40000, 40002)
    a.take("tcp", "0.0.0.0", 40000)
    assert not a.free("tcp", "127.0.0.1", 40000)
    assert a.free("udp", "0.0.0.0", 40000)
    a.take("tcp", "127.0.0.1", 40001)
    assert a.free("tcp", "127.0.0.2", 40001) and not a.free("tcp", "0.0.0.0", 40001)
    assert a.candidates(portmod.Request("tcp", "0.0.0.0", 0, 0, 80)) == [40002]
    a.give_back("tcp", "0.0.0.0", 40000)
    assert a.free("tcp", "127.0.0.1", 40000)


def test_hosts_file() -> None:
    text = etcfiles.hosts("abc", "", ["172.17.0.2"], ["db:10.0.0.5"])
    assert text.splitlines()[0] == "127.0.0.1\tlocalhost"
    assert "10.0.0.5\tdb" in text and text.endswith("172.17.0.2\tabc\n")
    # A line per network, in the order of the endpoints.
    text = etcfiles.hosts("abc", "x.org", ["172.17.0.2", "172.18.0.5"], [])
    assert text.endswith("172.17.0.2\tabc.x.org abc\n172.18.0.5\tabc.x.org abc\n")


def test_hosts_edits_like_libnetwork() -> None:
    text = etcfiles.hosts("me", "", ["172.17.0.3"], [], [("172.17.0.2", "db host1 dbname"), ("172.17.0.9", "dbx")])
    # etchosts.Update: the address of the lines whose first name is the alias, not a longer name.
    out = etcfiles.update_link_ip(text, "db", "172.17.0.7")
    assert "172.17.0.7\tdb host1 dbname\n" in out and "172.17.0.9\tdbx\n" in out
    assert etcfiles.update_link_ip(text, "nosuch", "1.2.3.4") == text
    line = etcfiles.self_line("172.18.0.4", "me", "")
    added = etcfiles.add_line(text, line)
    assert added == text + "172.18.0.4\tme\n"
    assert etcfiles.remove_line(added, line) == text


def test_rewrite_keeps_the_inode(tmp_path) -> None:
    """A bind-mounted file must be rewritten in place: a rename would leave the mount on the old inode."""
    f = tmp_path / "hosts"
    f.write_text("a much longer first content\n")
    ino = f.stat().st_ino
    etcfiles.rewrite(str(f), "short\n")
    assert f.read_text() == "short\n" and f.stat().st_ino == ino
    etcfiles.rewrite(str(f), "longer than before, again\n")
    assert f.read_text() == "longer than before, again\n"


def test_resolv_conf_drops_loopback_resolvers(tmp_path, monkeypatch) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 127.0.0.53\nsearch example.org\noptions edns0\n")
    real = etcfiles.host_resolv
    monkeypatch.setattr(etcfiles, "host_resolv", lambda path=str(conf): real(path))
    out = etcfiles.resolv([], [], [], embedded=False)
    assert "nameserver 8.8.8.8\nnameserver 8.8.4.4\n" in out and "127.0.0.53" not in out
    assert out.startswith("search example.org\n") and "options edns0" in out
    assert "nameserver 1.1.1.1" in etcfiles.resolv(["1.1.1.1"], [], [], embedded=False)
    assert "nameserver 127.0.0.11" in etcfiles.resolv([], [], [], embedded=True)


def test_parse_link_forms() -> None:
    assert parse_link("db:database") == ("db", "database", "db:database")
    assert parse_link("db") == ("db", "db", "db:db")
    assert parse_link("/db:/web/database") == ("db", "database", "db:database")


def test_link_env_like_dockerd() -> None:
    env = link_env("/web/my-db", "my-db", "10.0.0.5", ["5432/tcp", "53/udp", "80/tcp"], ["A=1", "PATH=/x", "HOME=/"])
    assert env == [
        "MY_DB_PORT=udp://10.0.0.5:53",
        "MY_DB_PORT_53_UDP=udp://10.0.0.5:53",
        "MY_DB_PORT_53_UDP_ADDR=10.0.0.5",
        "MY_DB_PORT_53_UDP_PORT=53",
        "MY_DB_PORT_53_UDP_PROTO=udp",
        "MY_DB_PORT_80_TCP=tcp://10.0.0.5:80",
        "MY_DB_PORT_80_TCP_ADDR=10.0.0.5",
        "MY_DB_PORT_80_TCP_PORT=80",
        "MY_DB_PORT_80_TCP_PROTO=tcp",
        "MY_DB_PORT_5432_TCP=tcp://10.0.0.5:5432",
        "MY_DB_PORT_5432_TCP_ADDR=10.0.0.5",
        "MY_DB_PORT_5432_TCP_PORT=5432",
        "MY_DB_PORT_5432_TCP_PROTO=tcp",
        "MY_DB_NAME=/web/my-db",
        "MY_DB_ENV_A=1",
    ]
    assert hosts_names("db", "abc", "db") == "db abc"
    assert hosts_names("database", "abc", "db") == "database abc db"


class _Names:
    def dns_lookup(self, cid: str, name: str) -> list[str] | None:
        return ["10.1.0.2", "10.1.0.3"] if (cid, name) == ("c1", "web") else None

    def dns_reverse(self, cid: str, ip: str) -> str | None:
        return "web.app" if ip == "10.1.0.2" else None

    def dns_upstreams(self, cid: str) -> list[str]:
        return []


def test_dns_answers_known_names_and_leaves_the_rest() -> None:
    r = bdns.answer(_Names(), "c1", dns.message.make_query("WEB.", "A"))
    assert r is not None and sorted(x.to_text() for x in r.answer[0]) == ["10.1.0.2", "10.1.0.3"]
    r = bdns.answer(_Names(), "c1", dns.message.make_query("web.", "AAAA"))
    assert r is not None and r.rcode() == dns.rcode.NOERROR and not r.answer
    r = bdns.answer(_Names(), "c1", dns.message.make_query(dns.reversename.from_address("10.1.0.2"), "PTR"))
    assert r is not None and r.answer[0][0].to_text() == "web.app."
    assert bdns.answer(_Names(), "c2", dns.message.make_query("web.", "A")) is None  # relayed
    assert bdns.answer(_Names(), "c1", dns.message.make_query(dns.reversename.from_address("8.8.8.8"), "PTR")) is None
    assert bdns._host_port("10.0.0.1") == ("10.0.0.1", 53) and bdns._host_port("[::1]:5353") == ("::1", 5353)
