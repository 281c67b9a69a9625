"""cgroup v2 device control: a BPF_PROG_TYPE_CGROUP_DEVICE program, as runc's devicefilter builds it.

v2 has no devices.allow; the kernel asks a BPF program attached to the cgroup instead, with
`struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` where access_type is
(access << 16) | type. The program returns 1 to allow, 0 to deny. Rules are checked last to first,
so a later rule overrides an earlier one (as writes to devices.allow/deny do on v1); no match denies.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Sequence

from bocker_engine.errors import System
from bocker_engine.runtime.devices import WILDCARD, DeviceRule

# linux/bpf.h
BPF_DEVCG_DEV_BLOCK = 1
BPF_DEVCG_DEV_CHAR = 2
BPF_DEVCG_ACC_MKNOD = 1
BPF_DEVCG_ACC_READ = 2
BPF_DEVCG_ACC_WRITE = 4

# Opcodes of the few instructions emitted (class | op | source).
LDXW = 0x61  # BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
AND32_K = 0x54  # BPF_ALU | BPF_AND | BPF_K
RSH32_K = 0x74  # BPF_ALU | BPF_RSH | BPF_K
MOV32_X = 0xBC  # BPF_ALU | BPF_MOV | BPF_X
AND32_X = 0x5C  # BPF_ALU | BPF_AND | BPF_X
JNE_K = 0x55  # BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto pc + 1 + off
JNE_X = 0x5D  # BPF_JMP | BPF_JNE | BPF_X
MOV64_K = 0xB7  # BPF_ALU64 | BPF_MOV | BPF_K
EXIT = 0x95  # BPF_JMP | BPF_EXIT

Insn = tuple[int, int, int, int, int]  # (code, dst, src, off, imm)

_TYPES = {"c": BPF_DEVCG_DEV_CHAR, "b": BPF_DEVCG_DEV_BLOCK}
_ACCESS = {"m": BPF_DEVCG_ACC_MKNOD, "r": BPF_DEVCG_ACC_READ, "w": BPF_DEVCG_ACC_WRITE}
_ALL_ACCESS = BPF_DEVCG_ACC_MKNOD | BPF_DEVCG_ACC_READ | BPF_DEVCG_ACC_WRITE


def _access_mask(access: str) -> int:
    mask = 0
    for ch in access:
        mask |= _ACCESS[ch]
    return mask


def program(rules: Sequence[DeviceRule]) -> list[Insn]:
    """The instructions for `rules`. Registers: R2 type, R3 access, R4 major, R5 minor, R1 scratch."""
    insns: list[Insn] = [
        (LDXW, 2, 1, 0, 0),
        (AND32_K, 2, 0, 0, 0xFFFF),
        (LDXW, 3, 1, 0, 0),
        (RSH32_K, 3, 0, 0, 16),
        (LDXW, 4, 1, 4, 0),
        (LDXW, 5, 1, 8, 0),
    ]
    for rule in reversed(rules):
        # A check that fails jumps past the rest of its rule's block; None marks "to the block's end".
        body: list[tuple[int, int, int, int | None, int]] = []
        if rule.kind != "a":
            body.append((JNE_K, 2, 0, None, _TYPES[rule.kind]))
        access = _access_mask(rule.access)
        if access != _ALL_ACCESS:
            # Every access bit requested must be in the rule's: (request & rule) == request.
            body += [(MOV32_X, 1, 3, 0, 0), (AND32_K, 1, 0, 0, access), (JNE_X, 1, 3, None, 0)]
        if rule.kind != "a" and rule.major != WILDCARD:
            body.append((JNE_K, 4, 0, None, rule.major))
        if rule.kind != "a" and rule.minor != WILDCARD:
            body.append((JNE_K, 5, 0, None, rule.minor))
        body += [(MOV64_K, 0, 0, 0, 1 if rule.allow else 0), (EXIT, 0, 0, 0, 0)]
        end = len(body)
        for i, (code, dst, src, off, imm) in enumerate(body):
            insns.append((code, dst, src, end - i - 1 if off is None else off, imm))
        if end == 2:
            # A rule that matches everything decides alone; the verifier refuses unreachable code.
            return insns
    insns.append((MOV64_K, 0, 0, 0, 0))
    insns.append((EXIT, 0, 0, 0, 0))
    return insns


def encode(insns: Sequence[Insn]) -> bytes:
    """struct bpf_insn { u8 code; u8 dst_reg:4, src_reg:4; s16 off; s32 imm; } (little-endian hosts)."""
    return b"".join(struct.pack("<BBhi", code, (src << 4) | dst, off, imm) for code, dst, src, off, imm in insns)


# ---- loading and attaching (bpf(2) through libc) ----------------------------------------------

_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(os.uname().machine, 321)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char]) -> int:
    ret = _libc.syscall(ctypes.c_long(_SYS_BPF), ctypes.c_int(cmd), attr, ctypes.c_uint(len(attr)))
    if ret < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return int(ret)


def load(insns: Sequence[Insn]) -> int:
    """BPF_PROG_LOAD; returns the program's fd. The verifier's log is in the error on refusal."""
    code = ctypes.create_string_buffer(encode(insns))
    license = ctypes.create_string_buffer(b"Apache")
    log = ctypes.create_string_buffer(65536)
    attr = ctypes.create_string_buffer(128)
    struct.pack_into(
        "<IIQQIIQ",
        attr,
        0,
        BPF_PROG_TYPE_CGROUP_DEVICE,
        len(insns),
        ctypes.addressof(code),
        ctypes.addressof(license),
        1,
        len(log),
        ctypes.addressof(log),
    )
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        detail = log.value.decode(errors="replace").strip()
        raise System(f"cgroups: loading the device filter failed: {e.strerror}: {detail}") from None


def attach(cgroup_dir: str, rules: Sequence[DeviceRule]) -> None:
    """Load the program for `rules` and attach it to the cgroup; the cgroup keeps it alive."""
    prog = load(program(rules))
    try:
        dirfd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            attr = ctypes.create_string_buffer(struct.pack("<IIII", dirfd, prog, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI))
            try:
                _bpf(BPF_PROG_ATTACH, attr)
            except OSError as e:
                raise System(f"cgroups: attaching the device filter to {cgroup_dir} failed: {e.strerror}") from None
        finally:
            os.close(dirfd)
    finally:
        os.close(prog)
