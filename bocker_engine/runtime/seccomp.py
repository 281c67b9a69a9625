"""Seccomp: Docker's profile format, resolved for one container, compiled to a BPF filter.

Three steps, in three places:
- resolve() (the engine, pure logic): pick the rules that apply to this container the way dockerd
  does (moby profiles/seccomp): `includes`/`excludes` on capabilities (the container's final set),
  architectures and minimum kernel. The result is plain data carried in the process spec.
- compile_filter() (the supervisor, before it forks): libseccomp builds the BPF program, once per
  distinct resolved profile (cached), so the container's child does no filter work.
- the container's init loads the bytes with seccomp(2) as its last step before exec
  (linux.seccomp_set_filter), so the runtime's own setup calls are not filtered.

libseccomp is reached through `pyseccomp` (a ctypes binding with libseccomp's own Python API):
it installs from PyPI into any venv and needs only the libseccomp2 shared library, where Debian's
`python3-seccomp` is compiled for the system Python and cannot be installed into a venv.
"""

from __future__ import annotations

import errno
import functools
import json
import os
from importlib import resources
from typing import Any

from bocker_engine.errors import InvalidParameter

UNCONFINED = "unconfined"
BUILTIN = "builtin"

# Go's runtime.GOARCH names (used in `includes.arches`) and libseccomp's for the native machine.
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "s390x": "s390x", "ppc64le": "ppc64le"}
_SCMP_NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}

_ACTIONS = {
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
}
_OPS = {
    "SCMP_CMP_NE": 1,
    "SCMP_CMP_LT": 2,
    "SCMP_CMP_LE": 3,
    "SCMP_CMP_EQ": 4,
    "SCMP_CMP_GE": 5,
    "SCMP_CMP_GT": 6,
    "SCMP_CMP_MASKED_EQ": 7,
}


@functools.cache
def default_profile() -> dict[str, Any]:
    """Docker's default profile, shipped as package data (see runtime/profiles/NOTICE.md)."""
    text = resources.files("bocker_engine.runtime").joinpath("profiles/seccomp-default.json").read_text()
    profile: dict[str, Any] = json.loads(text)
    return profile


def parse_profile(text: str) -> dict[str, Any]:
    """A custom profile as `--security-opt seccomp=<file>` sends it (the file's JSON), checked."""
    try:
        profile = json.loads(text)
    except ValueError as e:
        raise InvalidParameter(f"decoding seccomp profile failed: {e}") from None
    if not isinstance(profile, dict):
        raise InvalidParameter("decoding seccomp profile failed: not a JSON object")
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidParameter("use either 'architectures' or 'archMap'")
    _check_action(profile.get("defaultAction") or "")
    for call in profile.get("syscalls") or []:
        if not isinstance(call, dict):
            raise InvalidParameter("decoding seccomp profile failed: a syscall entry is not an object")
        if call.get("name") and call.get("names"):
            raise InvalidParameter("use either 'name' or 'names'")
        _check_action(call.get("action") or "")
        for arg in call.get("args") or []:
            if arg.get("op") not in _OPS:
                raise InvalidParameter(f"unrecognized operator {arg.get('op')!r}")
    return profile


def _check_action(action: str) -> None:
    if action not in _ACTIONS:
        raise InvalidParameter(f"unrecognized action {action!r}")


def _kernel_at_least(kernel: tuple[int, int], wanted: str) -> bool:
    major, _, minor = wanted.partition(".")
    return kernel >= (int(major), int(minor or 0))


def host_kernel() -> tuple[int, int]:
    release = os.uname().release.split("-")[0].split(".")
    return int(release[0]), int(release[1]) if len(release) > 1 and release[1].isdigit() else 0


def resolve(
    profile: dict[str, Any],
    caps: list[str],
    *,
    machine: str | None = None,
    kernel: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """The rules of `profile` that apply to a container with capabilities `caps` on this host.

    Returns {"default_action", "default_errno", "arches", "rules": [{"names", "action", "errno",
    "args"}]}: everything compile_filter needs, nothing left to decide.
    """
    machine = machine or os.uname().machine
    kernel = kernel or host_kernel()
    goarch = _GOARCH.get(machine, machine)
    native = _SCMP_NATIVE.get(machine, "")
    arches: list[str] = []
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == native:
            arches = [native, *(entry.get("subArchitectures") or [])]
    if not arches:
        arches = [a for a in profile.get("architectures") or []]
    default_errno = profile.get("defaultErrnoRet")
    have = set(caps)
    rules: list[dict[str, Any]] = []
    for call in profile.get("syscalls") or []:
        names = list(call.get("names") or []) or ([call["name"]] if call.get("name") else [])
        inc, exc = call.get("includes") or {}, call.get("excludes") or {}
        if goarch in (exc.get("arches") or []):
            continue
        if any(c in have for c in exc.get("caps") or []):
            continue
        if exc.get("minKernel") and _kernel_at_least(kernel, exc["minKernel"]):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if any(c not in have for c in inc.get("caps") or []):
            continue
        if inc.get("minKernel") and not _kernel_at_least(kernel, inc["minKernel"]):
            continue
        rules.append(
            {
                "names": names,
                "action": call.get("action") or "",
                "errno": call.get("errnoRet"),
                "args": [
                    {
                        "index": int(a.get("index") or 0),
                        "value": int(a.get("value") or 0),
                        "value_two": int(a.get("valueTwo") or 0),
                        "op": a.get("op"),
                    }
                    for a in call.get("args") or []
                ],
            }
        )
    return {
        "default_action": profile.get("defaultAction") or "SCMP_ACT_ERRNO",
        "default_errno": default_errno,
        "arches": arches,
        "rules": rules,
    }


def _action(name: str, errno_ret: int | None, default_errno: int | None) -> int:
    import pyseccomp as sc

    if name == "SCMP_ACT_ALLOW":
        return int(sc.ALLOW)
    if name == "SCMP_ACT_ERRNO":
        ret = errno_ret if errno_ret is not None else default_errno
        return int(sc.ERRNO(errno.EPERM if ret is None else ret))
    if name in ("SCMP_ACT_KILL", "SCMP_ACT_KILL_THREAD"):
        return int(sc.KILL_THREAD)
    if name == "SCMP_ACT_KILL_PROCESS":
        return int(sc.KILL_PROCESS)
    if name == "SCMP_ACT_TRAP":
        return int(sc.TRAP)
    if name == "SCMP_ACT_LOG":
        return int(sc.LOG)
    if name == "SCMP_ACT_TRACE":
        return int(sc.TRACE(errno_ret or 0))
    raise InvalidParameter(f"unrecognized action {name!r}")


def compile_filter(resolved: dict[str, Any]) -> bytes:
    """The classic-BPF program (struct sock_filter[]) for a resolved profile, cached by content."""
    return _compile(json.dumps(resolved, sort_keys=True))


@functools.lru_cache(maxsize=32)
def _compile(key: str) -> bytes:
    import pyseccomp as sc

    resolved = json.loads(key)
    default = _action(resolved["default_action"], resolved["default_errno"], None)
    f = sc.SyscallFilter(default)
    # The init sets no_new_privs itself when asked to; libseccomp must not force it.
    f.set_attr(sc.Attr.CTL_NNP, 0)
    for arch in resolved["arches"]:
        value = getattr(sc.Arch, arch.removeprefix("SCMP_ARCH_"), None)
        if value is None:
            continue
        try:
            f.add_arch(value)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    for rule in resolved["rules"]:
        action = _action(rule["action"], rule["errno"], resolved["default_errno"])
        if action == default:
            continue  # libseccomp refuses a rule that repeats the default; runc skips it too
        args = [sc.Arg(a["index"], _OPS[a["op"]], a["value"], a["value_two"]) for a in rule["args"]]
        # runc's rule: conditions on distinct arguments are ANDed in one rule; several on the same
        # argument would never all hold, so each becomes a rule of its own (ORed).
        indexes = [a["index"] for a in rule["args"]]
        groups = [[a] for a in args] if len(set(indexes)) != len(indexes) else [args]
        for name in rule["names"]:
            nr = sc.resolve_syscall(sc.Arch.NATIVE, name)
            if nr < 0:
                continue  # unknown to this libseccomp or arch: skipped, as runc does
            for group in groups:
                f.add_rule(action, nr, *group)
    fd = os.memfd_create("seccomp-bpf", os.MFD_CLOEXEC)
    try:
        with os.fdopen(os.dup(fd), "rb") as out:
            f.export_bpf(out)
            os.lseek(fd, 0, os.SEEK_SET)
            return out.read()
    finally:
        os.close(fd)
