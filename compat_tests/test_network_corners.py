"""Corners of networking checked against dockerd's behaviour: legacy links that follow the
linked container through restarts and renames, and the errors (words and status codes) of
connect, disconnect, links and endpoint settings. Traffic only to the test's own containers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import docker.errors
import pytest

from tests.daemon import Daemon, leftover_rules


def _inspect(dm: Daemon, ref: str) -> dict[str, Any]:
    return json.loads(dm.out("inspect", ref))[0]


def _ip(dm: Daemon, ref: str, net: str = "bridge") -> str:
    return str(_inspect(dm, ref)["NetworkSettings"]["Networks"][net]["IPAddress"])


def _hosts(dm: Daemon, ref: str) -> list[str]:
    return dm.out("exec", ref, "cat", "/etc/hosts").splitlines()


@pytest.fixture
def net(dm: Daemon) -> Iterator[str]:
    """A user network without a configured subnet."""
    dm.out("network", "create", "corners")
    yield "corners"
    dm.clean_containers()
    dm.docker("network", "rm", "corners")


def test_link_follows_the_restarted_and_renamed_container(dm: Daemon) -> None:
    dm.out("run", "-d", "--name", "kdb", "busybox", "sleep", "300")
    dm.out("run", "-d", "--name", "kweb", "--link", "kdb:database", "busybox", "sleep", "300")
    host = _inspect(dm, "kdb")["Config"]["Hostname"]
    assert f"{_ip(dm, 'kdb')}\tdatabase {host} kdb" in _hosts(dm, "kweb")
    # Restarted while its old address is taken: the linker's /etc/hosts (bind-mounted, so
    # rewritten in place) has the new one, and the alias reaches it.
    old = _ip(dm, "kdb")
    dm.out("stop", "-t", "0", "kdb")
    dm.out("run", "-d", "--name", "kfiller", "busybox", "sleep", "300")
    dm.out("start", "kdb")
    new = _ip(dm, "kdb")
    assert new != old
    assert f"{new}\tdatabase {host} kdb" in _hosts(dm, "kweb")
    assert "1 packets received" in dm.out("exec", "kweb", "ping", "-c1", "-W5", "database")
    # Renamed: the link holds (dockerd's links are by container), inspect shows the new name, the
    # running linker's hosts line keeps the old one until it restarts.
    dm.out("rename", "kdb", "kdb2")
    assert _inspect(dm, "kweb")["HostConfig"]["Links"] == ["/kdb2:/kweb/database"]
    assert f"{new}\tdatabase {host} kdb" in _hosts(dm, "kweb")
    dm.out("restart", "-t", "0", "kweb")
    assert f"{new}\tdatabase {host} kdb2" in _hosts(dm, "kweb")
    # The linker renamed: its links show its new name.
    dm.out("rename", "kweb", "kweb2")
    assert _inspect(dm, "kweb2")["HostConfig"]["Links"] == ["/kdb2:/kweb2/database"]
    dm.out("restart", "-t", "0", "kweb2")
    assert "DATABASE_NAME=/kweb2/database" in dm.out("exec", "kweb2", "env")
    # The linked container removed: the linker no longer starts, in dockerd's words.
    dm.out("rm", "-f", "kdb2")
    r = dm.docker("restart", "-t", "0", "kweb2")
    assert r.returncode != 0 and "Cannot link to a non running container: /kdb2 AS /kweb2/database" in r.stderr


def _api_error(call: Any) -> tuple[int, str]:
    with pytest.raises(docker.errors.APIError) as e:
        call()
    return int(e.value.status_code), str(e.value.explanation)


def test_connect_and_disconnect_errors_like_dockerd(dm: Daemon, net: str) -> None:
    api = dm.api()
    dm.out("run", "-d", "--name", "cc1", "busybox", "sleep", "300")
    # Endpoint settings are checked first (400), before "already connected".
    assert _api_error(lambda: api.connect_container_to_network("cc1", "bridge", aliases=["a"])) == (
        400, "network-scoped alias is supported only for containers in user defined networks")
    assert _api_error(lambda: api.connect_container_to_network("cc1", net, ipv4_address="10.1.2.3")) == (
        400, "user specified IP address is supported only when connecting to networks with user configured subnets")
    assert _api_error(lambda: api.connect_container_to_network("cc1", "host")) == (
        400, "container cannot be disconnected from host network or connected to host network")
    assert _api_error(lambda: api.connect_container_to_network("cc1", "none")) == (
        400, "container cannot be connected to multiple networks with one of the networks in private (none) mode")
    api.connect_container_to_network("cc1", net)
    assert _api_error(lambda: api.connect_container_to_network("cc1", net)) == (
        403, f"endpoint with name cc1 already exists in network {net}")
    api.disconnect_container_from_network("cc1", net)
    cid = _inspect(dm, "cc1")["Id"]
    assert _api_error(lambda: api.disconnect_container_from_network("cc1", net)) == (
        500, f"container {cid} is not connected to network {net}")
    # A stopped container: connecting twice changes nothing; its disconnect error has "the".
    dm.out("create", "--name", "cs1", "busybox", "true")
    api.connect_container_to_network("cs1", net)
    api.connect_container_to_network("cs1", net, aliases=["ignored"])
    assert _inspect(dm, "cs1")["NetworkSettings"]["Networks"][net]["Aliases"] is None
    api.disconnect_container_from_network("cs1", net)
    sid = _inspect(dm, "cs1")["Id"]
    assert _api_error(lambda: api.disconnect_container_from_network("cs1", net)) == (
        500, f"container {sid} is not connected to the network {net}")
    # Sharing the host's namespace: no other network.
    dm.out("run", "-d", "--name", "ch1", "--network", "host", "busybox", "sleep", "300")
    assert _api_error(lambda: api.connect_container_to_network("ch1", net)) == (
        400, "container sharing network namespace with another container or host cannot be connected to any other "
        "network")
    assert _api_error(lambda: api.disconnect_container_from_network("ch1", "host")) == (
        400, "container cannot be disconnected from host network or connected to host network")
    # Removing networks.
    dm.out("network", "connect", net, "cc1")
    r = dm.docker("network", "rm", net)
    assert r.returncode != 0 and "has active endpoints" in r.stderr
    assert _api_error(lambda: api.remove_network(net))[0] == 403
    assert _api_error(lambda: api.remove_network("bridge")) == (
        403, "bridge is a pre-defined network and cannot be removed")


def test_links_and_addresses_on_create_like_dockerd(dm: Daemon, net: str) -> None:
    dm.out("run", "-d", "--name", "lc1", "busybox", "sleep", "300")
    r = dm.docker("run", "--rm", "--network", "container:lc1", "--link", "lc1:q", "busybox", "true")
    assert r.returncode == 125 and "container type network can't be used with links" in r.stderr
    # On a user network a link is a DNS name, not checked at create (dockerd).
    r = dm.docker("run", "--rm", "--network", net, "--link", "nosuch:foo", "busybox", "true")
    assert r.returncode == 0, r.stderr
    r = dm.docker("run", "--rm", "--network", net, "--ip", "10.1.2.3", "busybox", "true")
    assert r.returncode == 125
    assert "user specified IP address is supported only when connecting to networks with user configured subnets" in (
        r.stderr)
    r = dm.docker("run", "--rm", "--ip", "10.1.2.3", "busybox", "true")
    assert r.returncode == 125 and "user specified IP address is supported on user defined networks only" in r.stderr
    r = dm.docker("run", "--rm", "--network-alias", "x", "busybox", "true")
    assert r.returncode == 125 and "network-scoped alias" in r.stderr


@pytest.fixture
def outside(dm: Daemon) -> Iterator[str]:
    """An address beyond the host, owned by the test: a namespace behind a veth pair with a /30
    of its own (not a bridge of the daemon, so reaching it means being forwarded out)."""
    ns, host_if = f"bkout{dm.net_slot}", f"bko{dm.net_slot}h"
    base = f"10.215.{dm.net_slot}"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "addr", "add", f"{base}.1/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "-n", ns, "addr", "add", f"{base}.2/30", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield f"{base}.2"
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_internal_network_has_no_way_out(dm: Daemon, outside: str) -> None:
    dm.out("network", "create", "--internal", "inner")
    dm.out("network", "create", "outer")
    try:
        assert json.loads(dm.out("network", "inspect", "inner"))[0]["Internal"] is True
        # A normal user network reaches the outside address (forwarded, masqueraded); an internal
        # one does not, but its containers reach each other.
        out = dm.out("run", "--rm", "--network", "outer", "busybox", "ping", "-c1", "-W5", outside)
        assert "1 packets received" in out
        r = dm.docker("run", "--rm", "--network", "inner", "busybox", "ping", "-c1", "-W2", outside)
        assert r.returncode == 1 and "0 packets received" in r.stdout
        dm.out("run", "-d", "--name", "in1", "--network", "inner", "-p", "127.0.0.1::80", "busybox", "sh", "-c",
               "mkdir -p /www && echo hi > /www/index.html && exec httpd -f -p 80 -h /www")  # fmt: skip
        ip = _ip(dm, "in1", "inner")
        out = dm.out("run", "--rm", "--network", "inner", "busybox", "wget", "-qO-", f"http://{ip}/index.html")
        assert out == "hi\n"
        # Published ports: none (dockerd ignores them on an internal network).
        assert _inspect(dm, "in1")["NetworkSettings"]["Ports"] == {}
        assert dm.out("port", "in1") == ""
        dm.out("rm", "-f", "in1")
    finally:
        dm.clean_containers()
        dm.docker("network", "rm", "inner", "outer")
    assert not [r for r in leftover_rules(dm.chain) if " DROP" in r and "-i br-" in r and "! -d" in r]
