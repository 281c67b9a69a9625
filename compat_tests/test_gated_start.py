"""A start whose network is finished while the process is held before exec (a gated start):
when the network fails then, the start fails with the network's error and leaves nothing."""

from __future__ import annotations

import json
import subprocess

from tests.daemon import Daemon, netns_files


def _network_bridge(dm: Daemon, name: str) -> str:
    net = json.loads(dm.out("network", "inspect", name))[0]
    return str(net["Options"].get("com.docker.network.bridge.name") or "br-" + net["Id"][:12])


def test_a_network_failing_after_setup_fails_the_start_and_leaves_nothing(dm: Daemon) -> None:
    dm.out("network", "create", "gatefail")
    try:
        bridge = _network_bridge(dm, "gatefail")
        before = netns_files(dm)
        # The bridge vanishes behind the daemon's back: its veth cannot be made, which happens
        # only once the container's process is set up and waiting at its gate.
        subprocess.run(["ip", "link", "del", bridge], check=True, capture_output=True)
        r = dm.docker("run", "--name", "gated", "--network", "gatefail", "busybox", "echo", "ran")
        assert r.returncode != 0
        assert "ran" not in r.stdout
        assert f"bridge {bridge} does not exist" in r.stderr
        state = json.loads(dm.out("inspect", "gated"))[0]["State"]
        assert not state["Running"] and state["Pid"] == 0
        assert netns_files(dm) == before
        assert dm.out("ps", "-q", "--filter", "name=gated") == ""
    finally:
        dm.docker("rm", "-f", "gated")
        dm.docker("network", "rm", "gatefail")
