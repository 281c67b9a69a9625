"""Device rules and the cgroup v2 device program, run through a small interpreter of the BPF
instructions devicefilter emits (the host here is cgroup v1; the live check is in
tests/integration/test_devicefilter_host.py)."""

from __future__ import annotations

import pytest

from bocker_engine.errors import InvalidParameter
from bocker_engine.runtime.cgroups import devicefilter as df
from bocker_engine.runtime.devices import (
    ALLOW_ALL,
    DEFAULT_RULES,
    DENY_ALL,
    WILDCARD,
    DeviceRule,
    container_devices,
    parse_cgroup_rule,
)

M, R, W = df.BPF_DEVCG_ACC_MKNOD, df.BPF_DEVCG_ACC_READ, df.BPF_DEVCG_ACC_WRITE
CHAR, BLOCK = df.BPF_DEVCG_DEV_CHAR, df.BPF_DEVCG_DEV_BLOCK


def run(insns: list[df.Insn], kind: int, major: int, minor: int, access: int) -> int:
    """Execute the program on one bpf_cgroup_dev_ctx; only the opcodes devicefilter uses exist."""
    ctx = {0: (access << 16) | kind, 4: major, 8: minor}
    reg = [0] * 11
    pc = 0
    steps = 0
    while True:
        steps += 1
        assert steps < 10_000, "no exit"
        code, dst, src, off, imm = insns[pc]
        pc += 1
        if code == df.LDXW:
            assert src == 1
            reg[dst] = ctx[off]
        elif code == df.AND32_K:
            reg[dst] = (reg[dst] & imm) & 0xFFFFFFFF
        elif code == df.RSH32_K:
            reg[dst] = (reg[dst] & 0xFFFFFFFF) >> imm
        elif code == df.MOV32_X:
            reg[dst] = reg[src] & 0xFFFFFFFF
        elif code == df.AND32_X:
            reg[dst] = reg[dst] & reg[src] & 0xFFFFFFFF
        elif code == df.JNE_K:
            if reg[dst] != imm:
                pc += off
        elif code == df.JNE_X:
            if reg[dst] != reg[src]:
                pc += off
        elif code == df.MOV64_K:
            reg[dst] = imm
        elif code == df.EXIT:
            return reg[0]
        else:
            raise AssertionError(f"unexpected opcode {code:#x}")


DEFAULT = df.program([DENY_ALL, *DEFAULT_RULES])


@pytest.mark.parametrize(
    "kind,major,minor,access,allowed",
    [
        (CHAR, 1, 3, R | W, 1),  # null
        (CHAR, 1, 5, R, 1),  # zero
        (CHAR, 1, 9, R, 1),  # urandom
        (CHAR, 136, 7, R | W, 1),  # pts/7
        (CHAR, 5, 2, R | W, 1),  # ptmx
        (CHAR, 10, 200, R | W, 1),  # net/tun
        (CHAR, 1, 11, W, 0),  # kmsg
        (CHAR, 1, 11, M, 1),  # mknod of anything is allowed ...
        (BLOCK, 8, 0, M, 1),
        (BLOCK, 8, 0, R, 0),  # ... using it is not
        (BLOCK, 8, 0, R | M, 0),
        (CHAR, 10, 229, R, 0),  # fuse: not dockerd's default
        (CHAR, 1, 1, R, 0),  # mem
        (BLOCK, 1, 3, R, 0),  # a block device with null's numbers
    ],
)
def test_default_program(kind: int, major: int, minor: int, access: int, allowed: int) -> None:
    assert run(DEFAULT, kind, major, minor, access) == allowed


def test_access_subset_and_order() -> None:
    prog = df.program([DENY_ALL, DeviceRule("c", 10, 229, "r")])
    assert run(prog, CHAR, 10, 229, R) == 1
    assert run(prog, CHAR, 10, 229, R | W) == 0
    assert run(prog, CHAR, 10, 229, W) == 0
    # A later rule overrides an earlier one, as successive writes to devices.allow/deny do.
    prog = df.program([ALLOW_ALL, DeviceRule("c", 1, 11, "rwm", allow=False)])
    assert run(prog, CHAR, 1, 11, W) == 0
    assert run(prog, BLOCK, 8, 0, R) == 1
    prog = df.program([DENY_ALL, DeviceRule("c", WILDCARD, 3, "rwm")])
    assert run(prog, CHAR, 99, 3, R) == 1 and run(prog, CHAR, 99, 4, R) == 0


def test_program_shape() -> None:
    # Allow-all is one unconditional block: no unreachable epilogue (the verifier refuses those).
    assert df.program([ALLOW_ALL])[-2:] == [(df.MOV64_K, 0, 0, 0, 1), (df.EXIT, 0, 0, 0, 0)]
    assert len(df.program([ALLOW_ALL])) == 8
    prog = df.program([DeviceRule("c", 1, 3, "rwm")])
    assert prog[6:] == [
        (df.JNE_K, 2, 0, 4, CHAR),
        (df.JNE_K, 4, 0, 3, 1),
        (df.JNE_K, 5, 0, 2, 3),
        (df.MOV64_K, 0, 0, 0, 1),
        (df.EXIT, 0, 0, 0, 0),
        (df.MOV64_K, 0, 0, 0, 0),
        (df.EXIT, 0, 0, 0, 0),
    ]
    assert len(df.encode(prog)) == 8 * len(prog)


def test_parse_cgroup_rule() -> None:
    assert parse_cgroup_rule("c 1:11 rwm") == DeviceRule("c", 1, 11, "rwm")
    assert parse_cgroup_rule("b *:* m") == DeviceRule("b", WILDCARD, WILDCARD, "m")
    assert parse_cgroup_rule("a *:* rwm").v1() == "a"
    assert DeviceRule("c", 136, WILDCARD, "rwm").v1() == "c 136:* rwm"
    for bad in ("c 1:11", "x 1:2 r", "c 1:2 rx", "c a:b r"):
        with pytest.raises(InvalidParameter, match="invalid device cgroup rule format"):
            parse_cgroup_rule(bad)


def test_container_devices() -> None:
    rules, nodes = container_devices({})
    assert rules == [DENY_ALL, *DEFAULT_RULES] and nodes == []
    rules, nodes = container_devices({"Devices": [{"PathOnHost": "/dev/zero", "PathInContainer": "/dev/z",
                                                   "CgroupPermissions": "r"}],
                                      "DeviceCgroupRules": ["c 10:229 rw"]})
    assert rules[-2:] == [DeviceRule("c", 1, 5, "r"), DeviceRule("c", 10, 229, "rw")]
    assert (nodes[0].path, nodes[0].kind, nodes[0].major, nodes[0].minor) == ("/dev/z", "c", 1, 5)
    rules, nodes = container_devices({"Privileged": True})
    assert rules == [ALLOW_ALL] and any(n.path == "/dev/null" for n in nodes)
    with pytest.raises(InvalidParameter, match="error gathering device information"):
        container_devices({"Devices": [{"PathOnHost": "/dev/nope"}]})
    with pytest.raises(InvalidParameter, match="not a device node"):
        container_devices({"Devices": [{"PathOnHost": "/etc/hostname"}]})
