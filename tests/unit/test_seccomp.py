"""Docker's seccomp profile resolved for a container (pure logic), and --security-opt parsing."""

from __future__ import annotations

import json
import os

import pytest

from bocker_engine.engine import security_opts
from bocker_engine.errors import InvalidParameter
from bocker_engine.runtime import seccomp
from bocker_engine.runtime.spec import DEFAULT_CAPS

PROFILE = seccomp.default_profile()


def names(resolved: dict, action: str = "SCMP_ACT_ALLOW") -> set[str]:
    return {n for r in resolved["rules"] if r["action"] == action for n in r["names"]}


def test_vendored_profile_is_upstream() -> None:
    # shared/ sits beside the repository (the worktree's parent may differ: try both).
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, *[".."] * n, "shared", "security", "seccomp-default.json") for n in (3, 4)]
    path = next((p for p in candidates if os.path.exists(p)), None)
    if path is None:
        pytest.skip("shared/security is not beside the repository")
    with open(path) as f:
        upstream = json.load(f)
    assert upstream == PROFILE


def test_default_caps() -> None:
    r = seccomp.resolve(PROFILE, DEFAULT_CAPS, machine="x86_64", kernel=(6, 1))
    allowed = names(r)
    assert r["default_action"] == "SCMP_ACT_ERRNO" and r["default_errno"] == 1
    assert r["arches"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert {"read", "capset", "execve", "chroot", "arch_prctl", "ptrace"} <= allowed
    # Only with CAP_SYS_ADMIN (bpf, unshare...), not at all (keyctl), other arches (s390 clone).
    assert not {"unshare", "mount", "bpf", "keyctl", "add_key", "syslog", "s390_runtime_instr"} & allowed
    # clone without namespace flags only: the argument filter is kept, the s390 variant dropped.
    clones = [x for x in r["rules"] if "clone" in x["names"]]
    assert len(clones) == 1
    assert clones[0]["args"] == [{"index": 0, "value": 2114060288, "value_two": 0, "op": "SCMP_CMP_MASKED_EQ"}]
    assert any(x["names"] == ["clone3"] and x["action"] == "SCMP_ACT_ERRNO" and x["errno"] == 38 for x in r["rules"])


def test_caps_change_the_rules() -> None:
    r = seccomp.resolve(PROFILE, [*DEFAULT_CAPS, "CAP_SYS_ADMIN"], machine="x86_64", kernel=(6, 1))
    assert {"unshare", "mount", "bpf", "clone", "clone3"} <= names(r)
    assert not [x for x in r["rules"] if x["names"] == ["clone3"] and x["action"] == "SCMP_ACT_ERRNO"]
    assert not [x for x in r["rules"] if "clone" in x["names"] and x["args"]]
    r = seccomp.resolve(PROFILE, [c for c in DEFAULT_CAPS if c != "CAP_SYS_CHROOT"], machine="x86_64", kernel=(6, 1))
    assert "chroot" not in names(r)


def test_arch_and_kernel() -> None:
    r = seccomp.resolve(PROFILE, DEFAULT_CAPS, machine="aarch64", kernel=(4, 4))
    assert r["arches"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert "arch_prctl" not in names(r) and "arm_fadvise64_64" in names(r)
    assert "ptrace" not in names(r)  # minKernel 4.8


def test_compile_filter() -> None:
    r = seccomp.resolve(PROFILE, DEFAULT_CAPS)
    prog = seccomp.compile_filter(r)
    assert len(prog) % 8 == 0 and len(prog) > 800
    assert seccomp.compile_filter(r) is prog  # cached per distinct profile


def test_parse_profile_errors() -> None:
    with pytest.raises(InvalidParameter, match="decoding seccomp profile failed"):
        seccomp.parse_profile("{nope")
    with pytest.raises(InvalidParameter, match="unrecognized action"):
        seccomp.parse_profile('{"defaultAction": "SCMP_ACT_MAYBE"}')


def test_security_opts() -> None:
    assert security_opts.parse(None) == security_opts.SecurityOptions()
    assert security_opts.parse(["no-new-privileges"]).no_new_privileges is True
    assert security_opts.parse(["no-new-privileges=false"]).no_new_privileges is False
    assert security_opts.parse(["no-new-privileges:true"]).no_new_privileges is True
    assert security_opts.parse(["seccomp=unconfined", "label=disable", "apparmor=x"]).seccomp == "unconfined"
    with pytest.raises(InvalidParameter, match='invalid --security-opt 2: "bogus=1"'):
        security_opts.parse(["bogus=1"])
    with pytest.raises(InvalidParameter, match='invalid --security-opt 1: "bogus"'):
        security_opts.parse(["bogus"])
    with pytest.raises(InvalidParameter, match='invalid --security-opt 2: "no-new-privileges=yes"'):
        security_opts.parse(["no-new-privileges=yes"])
    assert security_opts.seccomp_filter({"Privileged": True}, DEFAULT_CAPS) is None
    assert security_opts.seccomp_filter({"SecurityOpt": ["seccomp=unconfined"]}, DEFAULT_CAPS) is None
    deny_mkdir = [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]
    custom = json.dumps({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": deny_mkdir})
    f = security_opts.seccomp_filter({"SecurityOpt": [f"seccomp={custom}"]}, DEFAULT_CAPS)
    assert f is not None and f["default_action"] == "SCMP_ACT_ALLOW" and f["rules"][0]["names"] == ["mkdir"]
