"""Pure logic of networking: IPAM, port requests and the allocator, /etc files."""

from __future__ import annotations

import ipaddress
import os

import pytest

from bocker_engine.errors import Conflict, InvalidParameter
from bocker_engine.network import etcfiles, ipam
from bocker_engine.network import ports as portmod

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
    text = etcfiles.hosts("abc", "", "172.17.0.2", ["db:10.0.0.5"])
    assert text.splitlines()[0] == "127.0.0.1\tlocalhost"
    assert "10.0.0.5\tdb" in text and text.endswith("172.17.0.2\tabc\n")


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
