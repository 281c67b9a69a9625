"""Networking through the stock CLI and docker-py: the default bridge, published ports (TCP and
UDP, through the proxy on 127.0.0.1 and through DNAT on a host address), user networks,
host/none/container modes, and that nothing is left behind. Traffic stays on this machine."""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import threading
import urllib.request
from typing import Any

from tests.daemon import Daemon, leftover_rules, netns_files, wait_until

HTTPD = "mkdir -p /www && echo hello-$HOSTNAME > /www/index.html && exec httpd -f -p 80 -h /www"


def _inspect(dm: Daemon, ref: str) -> dict[str, Any]:
    return json.loads(dm.out("inspect", ref))[0]


def _fetch(url: str) -> str:
    last: Exception | None = None
    for _ in range(100):  # until httpd in the container listens (a deadline, not a timing check)
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read().decode()
        except OSError as e:
            last = e
            threading.Event().wait(0.1)
    raise AssertionError(f"{url}: {last}")


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _veths(dm: Daemon) -> list[str]:
    import subprocess

    r = subprocess.run(["ip", "-j", "link", "show", "master", dm.bridge], capture_output=True, text=True)
    return [x["ifname"] for x in json.loads(r.stdout or "[]")]


def _links_in(ns_path: str) -> str:
    import subprocess

    return subprocess.run(["nsenter", f"--net={ns_path}", "ip", "-o", "link"], capture_output=True, text=True).stdout


def _port_rules(dm: Daemon) -> list[str]:
    return [r for r in leftover_rules(dm.chain) if "--dport" in r]


def test_default_bridge_gives_eth0_route_and_etc_files(dm: Daemon) -> None:
    out = dm.out(
        "run", "--rm", "busybox", "sh", "-c", "ip -o -4 addr show eth0; ip route; cat /etc/hosts /etc/resolv.conf"
    )
    subnet = ipaddress.IPv4Network(dm.bip, strict=False)
    addr = out.split("inet ", 1)[1].split("/", 1)[0]
    assert ipaddress.IPv4Address(addr) in subnet
    gateway = dm.bip.split("/")[0]
    assert f"default via {gateway} dev eth0" in out
    assert f"{addr}\t" in out  # /etc/hosts names the container's own address
    assert "nameserver 127." not in out


def test_inspect_network_settings_and_reachability(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "netinfo", "busybox", "sh", "-c", HTTPD)
    ns = _inspect(dm, "netinfo")["NetworkSettings"]
    br = ns["Networks"]["bridge"]
    assert ns["IPAddress"] == br["IPAddress"] and br["IPAddress"]
    assert ns["Gateway"] == dm.bip.split("/")[0] and ns["IPPrefixLen"] == 24
    assert ns["MacAddress"].startswith("02:42:") and br["NetworkID"] and br["EndpointID"]
    assert os.path.exists(ns["SandboxKey"])
    # The host reaches the container's address over the bridge.
    assert _fetch(f"http://{br['IPAddress']}/index.html").startswith("hello-")
    # A second container reaches the first one.
    out = dm.out("run", "--rm", "busybox", "wget", "-qO-", f"http://{br['IPAddress']}/index.html")
    assert out.startswith("hello-")


def test_published_tcp_port_through_loopback_and_host_address(dm: Daemon) -> None:
    port = _free_port()
    dm.out("run", "-d", "--name", "web", "-p", f"{port}:80", "busybox", "sh", "-c", HTTPD)
    assert dm.out("port", "web").strip() == f"80/tcp -> 0.0.0.0:{port}"
    assert f"0.0.0.0:{port}->80/tcp" in dm.out("ps", "--filter", "name=web")
    assert _inspect(dm, "web")["NetworkSettings"]["Ports"] == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": str(port)}]}
    assert _fetch(f"http://127.0.0.1:{port}/index.html").startswith("hello-")  # userland proxy
    gateway = dm.bip.split("/")[0]
    assert _fetch(f"http://{gateway}:{port}/index.html").startswith("hello-")  # DNAT on a host address
    # From another container, through the host's address.
    assert dm.out("run", "--rm", "busybox", "wget", "-qO-", f"http://{gateway}:{port}/index.html").startswith("hello-")


def test_random_and_loopback_only_ports(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "rnd", "-p", "80", "-p", "127.0.0.1::81", "--expose", "82", "busybox", "sleep", "300")
    ports = _inspect(dm, "rnd")["NetworkSettings"]["Ports"]
    assert ports["82/tcp"] is None
    assert ports["81/tcp"][0]["HostIp"] == "127.0.0.1"
    assert int(ports["80/tcp"][0]["HostPort"]) > 0
    dm.out("run", "-d", "--name", "all", "-P", "--expose", "90", "busybox", "sleep", "300")
    out = dm.out("port", "all", "90")
    assert out.startswith("0.0.0.0:")


def test_port_conflict_gives_dockerds_error_and_leaves_nothing(dm: Daemon) -> None:
    port = _free_port()
    dm.out("run", "-d", "--name", "first", "-p", f"{port}:80", "busybox", "sleep", "300")
    rules, veths, ns = _port_rules(dm), _veths(dm), netns_files(dm)
    r = dm.docker("run", "-d", "--name", "second", "-p", f"{port}:80", "busybox", "sleep", "300")
    assert r.returncode == 125
    assert f"Bind for 0.0.0.0:{port} failed: port is already allocated" in r.stderr
    assert "driver failed programming external connectivity on endpoint second" in r.stderr
    assert _port_rules(dm) == rules and _veths(dm) == veths and netns_files(dm) == ns
    # A port another process holds: the proxy's bind error, and again nothing left.
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        busy = s.getsockname()[1]
        r = dm.docker("run", "-d", "--name", "third", "-p", f"{busy}:80", "busybox", "sleep", "300")
    assert r.returncode == 125 and "address already in use" in r.stderr
    assert _port_rules(dm) == rules and _veths(dm) == veths and netns_files(dm) == ns


def _udp_server_in(ns_path: str, port: int) -> socket.socket:
    """A UDP echo socket in the container's namespace (busybox's nc has no -u): opened by a
    thread that entered the namespace, so the published port's traffic really goes in there."""
    box: dict[str, socket.socket] = {}

    def enter() -> None:
        fd = os.open(ns_path, os.O_RDONLY)
        _setns(fd)
        os.close(fd)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("0.0.0.0", port))
        box["s"] = s

    t = threading.Thread(target=enter)
    t.start()
    t.join()
    return box["s"]


def _setns(fd: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:
        raise OSError(ctypes.get_errno(), "setns")


def test_published_udp_port(dm: Daemon) -> None:
    port = _free_port(socket.SOCK_DGRAM)
    dm.out("run", "-d", "--name", "udp", "-p", f"127.0.0.1:{port}:5353/udp", "busybox", "sleep", "300")
    server = _udp_server_in(_inspect(dm, "udp")["NetworkSettings"]["SandboxKey"], 5353)
    stop = threading.Event()

    def echo() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                data, addr = server.recvfrom(2048)
            except TimeoutError:
                continue
            server.sendto(b"echo:" + data, addr)

    t = threading.Thread(target=echo)
    t.start()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
            c.settimeout(10)
            c.sendto(b"ping", ("127.0.0.1", port))
            assert c.recvfrom(2048)[0] == b"echo:ping"
    finally:
        stop.set()
        t.join()
        server.close()
    assert dm.out("port", "udp").strip() == f"5353/udp -> 127.0.0.1:{port}"


def test_stop_and_rm_remove_veth_netns_and_rules(dm: Daemon) -> None:
    before_rules, before_veths = _port_rules(dm), _veths(dm)
    port = _free_port()
    dm.out("run", "-d", "--name", "gone", "-p", f"{port}:80", "busybox", "sleep", "300")
    assert len(_veths(dm)) == len(before_veths) + 1 and len(_port_rules(dm)) > len(before_rules)
    cid = _inspect(dm, "gone")["Id"]
    assert cid in netns_files(dm)
    dm.out("stop", "-t", "0", "gone")
    assert _veths(dm) == before_veths and _port_rules(dm) == before_rules and cid not in netns_files(dm)
    assert _inspect(dm, "gone")["NetworkSettings"]["Networks"]["bridge"]["IPAddress"] == ""
    # The port is free again: restart takes it back.
    dm.out("start", "gone")
    assert dm.out("port", "gone").strip() == f"80/tcp -> 0.0.0.0:{port}"
    dm.out("rm", "-f", "gone")
    assert _veths(dm) == before_veths and _port_rules(dm) == before_rules and cid not in netns_files(dm)


def test_no_duplicate_addresses_among_running_containers(dm: Daemon) -> None:
    for i in range(4):
        dm.out("run", "-d", "--name", f"dup{i}", "busybox", "sleep", "300")
    ips = [_inspect(dm, f"dup{i}")["NetworkSettings"]["IPAddress"] for i in range(4)]
    assert len(set(ips)) == 4


def test_host_none_and_container_modes(dm: Daemon) -> None:
    assert "eth0" not in dm.out("run", "--rm", "--network", "none", "busybox", "ip", "-o", "link")
    host_links = dm.out("run", "--rm", "--network", "host", "busybox", "ip", "-o", "link")
    assert dm.bridge in host_links
    dm.out("run", "-d", "--name", "owner", "busybox", "sleep", "300")
    ip = _inspect(dm, "owner")["NetworkSettings"]["IPAddress"]
    out = dm.out("run", "--rm", "--network", "container:owner", "busybox", "ip", "-o", "-4", "addr", "show", "eth0")
    assert f"inet {ip}/" in out


def test_user_network_lifecycle_with_fixed_ip(dm: Daemon) -> None:
    subnet = ipaddress.IPv4Network(f"10.214.{dm.net_slot}.0/24").subnets(new_prefix=26)
    sub = next(s for i, s in enumerate(subnet) if i == 3)
    fixed = str(sub.network_address + 10)
    dm.out("network", "create", "--subnet", str(sub), "--label", "t=1", "appnet")
    try:
        assert "appnet" in dm.out("network", "ls", "--format", "{{.Name}}").split()
        assert dm.docker("network", "create", "appnet").returncode != 0
        info = json.loads(dm.out("network", "inspect", "appnet"))[0]
        assert info["IPAM"]["Config"][0]["Subnet"] == str(sub) and info["Driver"] == "bridge"
        dm.out("run", "-d", "--name", "fixed", "--network", "appnet", "--ip", fixed, "busybox", "sh", "-c", HTTPD)
        settings = _inspect(dm, "fixed")["NetworkSettings"]["Networks"]["appnet"]
        assert settings["IPAddress"] == fixed
        info = json.loads(dm.out("network", "inspect", "appnet"))[0]
        assert list(info["Containers"].values())[0]["IPv4Address"] == f"{fixed}/26"
        out = dm.out("run", "--rm", "--network", "appnet", "busybox", "wget", "-qO-", f"http://{fixed}/index.html")
        assert out.startswith("hello-")
        r = dm.docker("network", "rm", "appnet")
        assert r.returncode != 0 and "has active endpoints" in r.stderr
        # connect/disconnect a running container on the default bridge.
        dm.out("run", "-d", "--name", "joiner", "busybox", "sleep", "300")
        dm.out("network", "connect", "appnet", "joiner")
        key = _inspect(dm, "joiner")["NetworkSettings"]["SandboxKey"]
        assert "eth1" in _links_in(key)
        assert _inspect(dm, "joiner")["NetworkSettings"]["Networks"]["appnet"]["IPAddress"]
        dm.out("network", "disconnect", "appnet", "joiner")
        assert "eth1" not in _links_in(key)
        assert "appnet" not in _inspect(dm, "joiner")["NetworkSettings"]["Networks"]
        dm.out("rm", "-f", "fixed", "joiner")
    finally:
        dm.clean_containers()
        dm.docker("network", "rm", "appnet")
    assert "appnet" not in dm.out("network", "ls", "--format", "{{.Name}}").split()


def test_dockerpy_networks_and_ports(dm: Daemon) -> None:
    client = dm.client
    net = client.networks.create("pynet", driver="bridge")
    try:
        assert client.networks.get("pynet").id == net.id
        assert "pynet" in [n.name for n in client.networks.list()]
        c = client.containers.run("busybox", ["sh", "-c", HTTPD], detach=True, network="pynet", ports={"80/tcp": None})
        c.reload()
        host_port = c.ports["80/tcp"][0]["HostPort"]
        assert _fetch(f"http://127.0.0.1:{host_port}/index.html").startswith("hello-")
        assert c.attrs["NetworkSettings"]["Networks"]["pynet"]["IPAddress"]
        c.remove(force=True)
    finally:
        net.remove()
    assert client.networks.prune()["NetworksDeleted"] in (None, [])


def test_refused_until_supported(dm: Daemon) -> None:
    r = dm.docker("network", "create", "--ipv6", "v6net")
    assert r.returncode != 0 and "not supported" in r.stderr


def test_info_lists_network_plugins(dm: Daemon) -> None:
    assert dm.info()["Plugins"]["Network"] == ["bridge", "host", "null"]


def test_networks_restored_after_daemon_restart(dm: Daemon) -> None:
    """A restarted daemon (no live restore: containers stop) leaves no sandbox behind and
    hands out addresses again."""
    dm.out("run", "-d", "--name", "survivor", "busybox", "sleep", "300")
    dm.stop()
    dm.start()
    assert _veths(dm) == [] and netns_files(dm) == [] and _port_rules(dm) == []
    dm.out("start", "survivor")
    wait_until(lambda: _inspect(dm, "survivor")["NetworkSettings"]["IPAddress"] != "", 20, "an address")


def test_legacy_links_on_default_bridge(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "ldb", "-e", "SECRET=s3", "--expose", "80", "busybox", "sh", "-c", HTTPD)
    ip = _inspect(dm, "ldb")["NetworkSettings"]["IPAddress"]
    dm.out("create", "--name", "lweb", "--link", "ldb:database", "busybox", "sh", "-c", "cat /etc/hosts; env")
    assert _inspect(dm, "lweb")["HostConfig"]["Links"] == ["/ldb:/lweb/database"]
    dm.out("start", "lweb")
    wait_until(lambda: _inspect(dm, "lweb")["State"]["Status"] == "exited", 20, "lweb to exit")
    out = dm.out("logs", "lweb")
    hostname = _inspect(dm, "ldb")["Config"]["Hostname"]
    assert f"{ip}\tdatabase {hostname} ldb" in out
    env = set(out.split())
    for var in (
        f"DATABASE_PORT=tcp://{ip}:80",
        f"DATABASE_PORT_80_TCP=tcp://{ip}:80",
        f"DATABASE_PORT_80_TCP_ADDR={ip}",
        "DATABASE_PORT_80_TCP_PORT=80",
        "DATABASE_PORT_80_TCP_PROTO=tcp",
        "DATABASE_NAME=/lweb/database",
        "DATABASE_ENV_SECRET=s3",
    ):
        assert var in env, var
    # The alias reaches the linked container (through /etc/hosts); the linker's own Env wins.
    out = dm.out("run", "--rm", "--link", "ldb:database", "-e", "DATABASE_NAME=mine", "busybox", "sh", "-c",
                 "echo $DATABASE_NAME; wget -qO- http://database/index.html")  # fmt: skip
    assert out.startswith("mine\nhello-")
    # docker-py's links.
    got = dm.client.containers.run("busybox", ["cat", "/etc/hosts"], links={"ldb": "pydb"}, remove=True)
    assert f"{ip}\tpydb" in got.decode()


def test_legacy_link_errors(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "--link", "nosuch:x", "busybox", "true")
    assert r.returncode == 125 and "could not get container for nosuch" in r.stderr
    dm.out("create", "--name", "sleeper", "busybox", "sleep", "300")
    r = dm.docker("run", "--rm", "--link", "sleeper:s", "busybox", "true")
    assert r.returncode != 0 and "Cannot link to a non running container: /sleeper AS" in r.stderr
    r = dm.docker("run", "--rm", "--network", "host", "--link", "sleeper:s", "busybox", "true")
    assert r.returncode != 0 and "host type networking can't be used with links" in r.stderr


def test_user_bridges_are_isolated_from_each_other(dm: Daemon) -> None:
    dm.out("network", "create", "isoa")
    dm.out("network", "create", "isob")
    try:
        dm.out("run", "-d", "--name", "in-b", "--network", "isob", "busybox", "sh", "-c", HTTPD)
        ip_b = _inspect(dm, "in-b")["NetworkSettings"]["Networks"]["isob"]["IPAddress"]
        dm.out("run", "-d", "--name", "in-default", "busybox", "sh", "-c", HTTPD)
        ip_default = _inspect(dm, "in-default")["NetworkSettings"]["IPAddress"]
        # From another user network, and from the default bridge: dropped (ping gives up after its
        # deadline; busybox's `wget -T` crashes on a timeout in this build).
        for net in ("isoa", "bridge"):
            r = dm.docker("run", "--rm", "--network", net, "busybox", "ping", "-c1", "-W2", ip_b)
            assert r.returncode == 1 and "0 packets received" in r.stdout, (net, r.stdout)
        r = dm.docker("run", "--rm", "--network", "isoa", "busybox", "ping", "-c1", "-W2", ip_default)
        assert r.returncode == 1 and "0 packets received" in r.stdout
        assert "1 packets received" in dm.out("run", "--rm", "--network", "isob", "busybox", "ping", "-c1", ip_b)
        # On the same network, and from the host: reachable.
        out = dm.out("run", "--rm", "--network", "isob", "busybox", "wget", "-qO-", f"http://{ip_b}/index.html")
        assert out.startswith("hello-")
        assert _fetch(f"http://{ip_b}/index.html").startswith("hello-")
        dm.out("rm", "-f", "in-b", "in-default")
    finally:
        dm.clean_containers()
        dm.docker("network", "rm", "isoa", "isob")
    assert not [r for r in leftover_rules(dm.chain) if "ISO" in r and "-i br-" in r]
