"""NAT and filter rules in chains of our own, through the iptables command.

Why the iptables command rather than nftables (libnftables JSON or pyroute2's nftables): it is
what every current distribution ships and what firewalld, ufw and dockerd itself use, on either
backend (this machine's iptables is the nf_tables one); our rules then live in the same tables as
the host's, hooked in by one jump each from the built-in chains, so the host's own rules are never
touched. The nft CLI and libnftables are often absent (here too), and pyroute2's nftables module
is incomplete. A batch goes through `iptables-restore --noflush` so a set of rules is applied
all or nothing (a failed publish leaves no rule behind).
"""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass

from bocker_engine.errors import System

IPTABLES = "iptables"
IPTABLES_RESTORE = "iptables-restore"


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    args: tuple[str, ...]


def _run(args: list[str], input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=input, capture_output=True, text=True, timeout=30)


class Firewall:
    """The chains of one daemon: `prefix` (DNAT of published ports), `prefix`-POST (masquerade)
    in nat, `prefix`-FWD in filter, and dockerd's two-stage isolation between bridge networks
    (`prefix`-ISO1: traffic leaving a bridge for another interface; `prefix`-ISO2: dropped
    if that interface is another of our bridges). Two daemons with different prefixes never
    share a rule."""

    def __init__(self, prefix: str) -> None:
        self.nat = prefix
        self.post = prefix + "-POST"
        self.fwd = prefix + "-FWD"
        self.iso1 = prefix + "-ISO1"
        self.iso2 = prefix + "-ISO2"

    def _chains(self) -> list[tuple[str, str]]:
        return [
            ("nat", self.nat),
            ("nat", self.post),
            ("filter", self.fwd),
            ("filter", self.iso1),
            ("filter", self.iso2),
        ]

    def _jumps(self) -> list[tuple[str, str, list[str]]]:
        return [
            ("nat", "PREROUTING", ["-m", "addrtype", "--dst-type", "LOCAL", "-j", self.nat]),
            ("nat", "OUTPUT", ["!", "-d", "127.0.0.0/8", "-m", "addrtype", "--dst-type", "LOCAL", "-j", self.nat]),
            ("nat", "POSTROUTING", ["-j", self.post]),
            ("filter", "FORWARD", ["-j", self.fwd]),
        ]

    def setup(self) -> None:
        """Our chains, empty, hooked into the built-in ones (idempotent: a leftover from a crash
        is flushed, its rules are made again by whoever owns them)."""
        for table, chain in self._chains():
            if _run([IPTABLES, "-w", "-t", table, "-N", chain]).returncode != 0:
                r = _run([IPTABLES, "-w", "-t", table, "-F", chain])
                if r.returncode != 0:
                    raise System(f"iptables: cannot set up chain {chain} in {table}: {r.stderr.strip()}")
        # Isolation first: the per-network ACCEPT rules come after it in the forwarding chain.
        r = _run([IPTABLES, "-w", "-t", "filter", "-A", self.fwd, "-j", self.iso1])
        if r.returncode != 0:
            raise System(f"iptables: cannot set up chain {self.iso1}: {r.stderr.strip()}")
        for table, chain, args in self._jumps():
            if _run([IPTABLES, "-w", "-t", table, "-C", chain, *args]).returncode != 0:
                op = ["-I", chain, "1"] if chain == "FORWARD" else ["-A", chain]
                r = _run([IPTABLES, "-w", "-t", table, *op, *args])
                if r.returncode != 0:
                    raise System(f"iptables: cannot hook {self.nat} into {chain}: {r.stderr.strip()}")

    def teardown(self) -> None:
        for table, chain, args in self._jumps():
            while _run([IPTABLES, "-w", "-t", table, "-D", chain, *args]).returncode == 0:
                pass
        for table, chain in self._chains():
            _run([IPTABLES, "-w", "-t", table, "-F", chain])
        for table, chain in self._chains():
            _run([IPTABLES, "-w", "-t", table, "-X", chain])

    def exists(self) -> bool:
        return _run([IPTABLES, "-w", "-t", "nat", "-S", self.nat]).returncode == 0

    def list_rules(self) -> list[str]:
        """Every rule of our chains and every jump to them (tests check cleanup with it)."""
        out = []
        for table in ("nat", "filter"):
            r = _run([IPTABLES, "-w", "-t", table, "-S"])
            mine = {c for _, c in self._chains()}
            out += [ln for ln in r.stdout.splitlines() if mine & set(ln.split())]
        return out

    # ---- rule sets -------------------------------------------------------------------------

    def network_rules(self, bridge: str, subnet: str, internal: bool = False) -> list[Rule]:
        if internal:
            # dockerd's rules for an internal network: nothing in or out but its own subnet, no NAT.
            return [
                Rule("filter", self.iso1, ("!", "-s", subnet, "-o", bridge, "-j", "DROP")),
                Rule("filter", self.iso1, ("!", "-d", subnet, "-i", bridge, "-j", "DROP")),
                Rule("filter", self.fwd, ("-i", bridge, "-o", bridge, "-j", "ACCEPT")),
            ]
        return [
            Rule("nat", self.post, ("-s", subnet, "!", "-o", bridge, "-j", "MASQUERADE")),
            Rule("nat", self.nat, ("-i", bridge, "-j", "RETURN")),
            Rule(
                "filter",
                self.fwd,
                ("-o", bridge, "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "ACCEPT"),
            ),
            Rule("filter", self.fwd, ("-i", bridge, "-j", "ACCEPT")),
            Rule("filter", self.iso1, ("-i", bridge, "!", "-o", bridge, "-j", self.iso2)),
            Rule("filter", self.iso2, ("-o", bridge, "-j", "DROP")),
        ]

    def port_rules(self, bridge: str, proto: str, host_ip: str, host_port: int, ip: str, port: int) -> list[Rule]:
        dst = () if host_ip in ("", "0.0.0.0") else ("-d", f"{host_ip}/32")
        return [
            Rule(
                "nat",
                self.nat,
                (
                    *dst,
                    "!",
                    "-i",
                    bridge,
                    "-p",
                    proto,
                    "-m",
                    proto,
                    "--dport",
                    str(host_port),
                    "-j",
                    "DNAT",
                    "--to-destination",
                    f"{ip}:{port}",
                ),
            ),
            Rule(
                "filter",
                self.fwd,
                (
                    "-d",
                    f"{ip}/32",
                    "!",
                    "-i",
                    bridge,
                    "-o",
                    bridge,
                    "-p",
                    proto,
                    "-m",
                    proto,
                    "--dport",
                    str(port),
                    "-j",
                    "ACCEPT",
                ),
            ),
            Rule(
                "nat",
                self.post,
                (
                    "-s",
                    f"{ip}/32",
                    "-d",
                    f"{ip}/32",
                    "-p",
                    proto,
                    "-m",
                    proto,
                    "--dport",
                    str(port),
                    "-j",
                    "MASQUERADE",
                ),
            ),
        ]

    # ---- apply -----------------------------------------------------------------------------

    def add(self, rules: list[Rule]) -> None:
        """All the rules or none (one iptables-restore transaction per table)."""
        if not rules:
            return
        r = _run([IPTABLES_RESTORE, "-w", "--noflush"], input=_batch("-A", rules))
        if r.returncode != 0:
            raise System(f"iptables: {r.stderr.strip()}")

    def delete(self, rules: list[Rule]) -> None:
        """Remove the rules; one already gone (removed by hand, or a crash) is not an error."""
        if not rules:
            return
        if _run([IPTABLES_RESTORE, "-w", "--noflush"], input=_batch("-D", rules)).returncode == 0:
            return
        for rule in rules:
            with contextlib.suppress(Exception):
                _run([IPTABLES, "-w", "-t", rule.table, "-D", rule.chain, *rule.args])


def _batch(op: str, rules: list[Rule]) -> str:
    out = []
    for table in ("nat", "filter"):
        mine = [r for r in rules if r.table == table]
        if mine:
            out.append(f"*{table}")
            out += [f"{op} {r.chain} {' '.join(r.args)}" for r in mine]
            out.append("COMMIT")
    return "\n".join(out) + "\n"
