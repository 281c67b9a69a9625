"""Links and namespaces through netlink (pyroute2): the bridge, the veth pairs, and the
network namespace file a container's processes join.

A netns file is made by a fresh thread that unshares its own network namespace (allowed in a
threaded process, unlike a mount or user namespace) and bind-mounts it onto the file; that
thread then configures the namespace's side (lo up) and ends, so no thread of the daemon ever
lingers in a container's namespace. All of it is blocking: call through asyncio.to_thread.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from bocker_engine import linux

T = TypeVar("T")
MS_BIND = 4096


def _in_thread(fn: Callable[[], T]) -> T:
    """Run fn in a thread of its own, which may change its network namespace and then ends."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=run, name="netns")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return,unused-ignore]


def _enter(ns_path: str) -> None:
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        linux.setns(fd, linux.CLONE_NEWNET)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class Veth:
    """A veth pair: `host_if` on `bridge`, `ifname` inside the namespace with its address, MAC
    and (`default_route`) the default route via `gateway`."""

    bridge: str
    host_if: str
    ifname: str
    address: str
    prefixlen: int
    gateway: str
    mac: str
    default_route: bool


def create_netns(path: str, veth: Veth | None = None) -> None:
    """A new network namespace, with lo up, kept alive by a bind mount on `path`; with `veth`,
    its first veth pair too.

    One thread does it all: a netlink socket stays in the namespace it was opened in, so the
    one opened before the thread leaves the host's namespace makes the pair and puts it on the
    bridge, and the one opened after configures the inside (no second thread to enter it)."""

    def make() -> None:
        with IPRoute() as host:
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o444))
            linux.unshare(linux.CLONE_NEWNET)
            own = f"/proc/self/task/{threading.get_native_id()}/ns/net"
            linux.mount(own, path, None, MS_BIND)
            with IPRoute() as ns:
                ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
                if veth is not None:
                    _make_veth(host, own, veth)
                    _configure_inside(ns, veth)

    try:
        _in_thread(make)
    except BaseException:
        if veth is not None:
            delete_link(veth.host_if)
        delete_netns(path)
        raise


def delete_netns(path: str) -> None:
    with contextlib.suppress(OSError):
        linux.umount(path, linux.MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def is_netns_mount(path: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as f:
            return any(line.split()[4] == path for line in f)
    except OSError:
        return False


# ---- bridge ----------------------------------------------------------------------------------


def ensure_bridge(name: str, gateway: str, prefixlen: int) -> None:
    """The bridge `name` with the gateway address, up (made if missing, address added if not there)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            ipr.link("add", ifname=name, kind="bridge")
            found = ipr.link_lookup(ifname=name)
        idx = found[0]
        have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(index=idx, family=2)}
        if (gateway, prefixlen) not in have:
            ipr.addr("add", index=idx, address=gateway, prefixlen=prefixlen)
        ipr.link("set", index=idx, state="up")


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if found:
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=found[0])


def link_exists(name: str) -> bool:
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def links_with_master(bridge: str) -> list[str]:
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=bridge)
        if not found:
            return []
        return [
            str(link.get_attr("IFLA_IFNAME")) for link in ipr.get_links() if link.get_attr("IFLA_MASTER") == found[0]
        ]


def host_routes() -> list[ipaddress.IPv4Network]:
    """The host's IPv4 routes (but the default one): subnets a new network must not overlap."""
    out = []
    with IPRoute() as ipr:
        for r in ipr.get_routes(family=2, table=254):
            dst = r.get_attr("RTA_DST")
            if dst and r["dst_len"]:
                out.append(ipaddress.IPv4Network(f"{dst}/{r['dst_len']}", strict=False))
    return out


# ---- endpoints -------------------------------------------------------------------------------


def add_endpoint(ns_path: str, veth: Veth) -> None:
    """A veth pair into an existing namespace (a network connected to a running container)."""
    try:
        with IPRoute() as host:
            _make_veth(host, ns_path, veth)

        def inside() -> None:
            _enter(ns_path)
            with IPRoute() as ns:
                _configure_inside(ns, veth)

        _in_thread(inside)
    except BaseException:
        delete_link(veth.host_if)
        raise


def _make_veth(host: IPRoute, ns_path: str, veth: Veth) -> None:
    """The pair in one request: the host side on the bridge and up, the peer made directly in
    the namespace with its name and MAC."""
    br = host.link_lookup(ifname=veth.bridge)
    if not br:
        raise OSError(f"bridge {veth.bridge} does not exist")
    fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        host.link(
            "add",
            ifname=veth.host_if,
            kind="veth",
            master=br[0],
            state="up",
            peer={"ifname": veth.ifname, "net_ns_fd": fd, "address": veth.mac},
        )
    finally:
        os.close(fd)


def _configure_inside(ns: IPRoute, veth: Veth) -> None:
    idx = ns.link_lookup(ifname=veth.ifname)[0]
    ns.addr("add", index=idx, address=veth.address, prefixlen=veth.prefixlen)
    ns.link("set", index=idx, state="up")
    if veth.default_route and veth.gateway:
        ns.route("add", dst="0.0.0.0/0", gateway=veth.gateway)


def run_in_netns(ns_path: str, fn: Callable[[], T]) -> T:
    """fn in a thread that entered the namespace (say, to open a socket bound to it)."""

    def go() -> T:
        _enter(ns_path)
        return fn()

    return _in_thread(go)
