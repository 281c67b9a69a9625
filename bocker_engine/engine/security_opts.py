"""`--security-opt` as dockerd reads it (moby daemon parseSecurityOpt), and what it decides.

The CLI sends `seccomp=<file>` with the file's JSON content in place of the path, so a custom
profile arrives here whole. AppArmor and SELinux labels are accepted and have no effect (this
engine has neither), as on a dockerd host without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bocker_engine.errors import InvalidParameter
from bocker_engine.runtime import seccomp

_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_FALSE = {"0", "f", "F", "FALSE", "false", "False"}


def _parse_bool(value: str) -> bool | None:
    """Go's strconv.ParseBool."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return None


@dataclass
class SecurityOptions:
    no_new_privileges: bool | None = None  # None: the daemon's default
    seccomp: str = ""  # "" or "builtin": Docker's default profile; "unconfined"; else a profile's JSON


def parse(opts: list[str] | None) -> SecurityOptions:
    out = SecurityOptions()
    for opt in opts or []:
        if not isinstance(opt, str):
            raise InvalidParameter(f"invalid --security-opt 1: {opt!r}")
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":
            continue
        if "=" in opt:
            key, _, value = opt.partition("=")
        elif ":" in opt:
            key, _, value = opt.partition(":")  # the deprecated separator, still accepted by dockerd
        else:
            raise InvalidParameter(f'invalid --security-opt 1: "{opt}"')
        if key in ("label", "apparmor"):
            continue
        if key == "seccomp":
            out.seccomp = value
            if value not in ("", seccomp.UNCONFINED, seccomp.BUILTIN):
                seccomp.parse_profile(value)
        elif key in ("no-new-privileges", "writable-cgroups"):
            flag = _parse_bool(value)
            if flag is None:
                raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
            if key == "no-new-privileges":
                out.no_new_privileges = flag
        else:
            raise InvalidParameter(f'invalid --security-opt 2: "{opt}"')
    return out


def seccomp_filter(hc: dict[str, Any], caps: list[str]) -> dict[str, Any] | None:
    """The resolved seccomp rules for a container, None when it runs unconfined (dockerd: with
    --privileged or seccomp=unconfined)."""
    opts = parse(hc.get("SecurityOpt"))
    if hc.get("Privileged") or opts.seccomp == seccomp.UNCONFINED:
        return None
    if opts.seccomp in ("", seccomp.BUILTIN):
        profile = seccomp.default_profile()
    else:
        profile = seccomp.parse_profile(opts.seccomp)
    return seccomp.resolve(profile, caps)
