"""The process spec's wire form: what the supervisor gets is what the engine built."""

from __future__ import annotations

import dataclasses
import json

from bocker_engine.runtime.spec import Mount, ProcessSpec


def _spec() -> ProcessSpec:
    return ProcessSpec(
        "c1",
        ["sh", "-c", "true"],
        ["A=b"],
        console_size=(24, 80),
        mounts=[Mount("bind", "/etc/hosts", "/var/x/hosts", True)],
        cgroup_mounts=[Mount("tmpfs", "/sys/fs/cgroup")],
        devices=[{"path": "/dev/fuse", "major": 10, "minor": 229}],
        seccomp={"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]},
        sysctls={"net.ipv4.ip_forward": "1"},
    )


def test_wire_form_is_the_dataclass_as_json_and_reads_back() -> None:
    s = _spec()
    wire = json.dumps(s.to_json(), sort_keys=True)
    assert wire == json.dumps(dataclasses.asdict(s), sort_keys=True)
    assert ProcessSpec.from_json(json.loads(wire)) == s
