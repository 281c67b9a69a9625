"""The container init takes capability figures from the spec (read by the supervisor on the host),
never from the container's /proc: here the readers are made to fail and the result still holds."""

from __future__ import annotations

import os

import pytest

from bocker_engine import linux
from bocker_engine.runtime import init
from bocker_engine.runtime.spec import DEFAULT_CAPS, ProcessSpec

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to change capabilities")


def test_drop_privileges_uses_host_figures_only() -> None:
    spec = ProcessSpec(id="x", args=["true"], env=[])
    spec.host_last_cap, spec.host_permitted_caps = linux.last_cap(), linux.permitted_caps()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            def boom() -> int:
                raise AssertionError("read inside the container")

            linux.last_cap = boom
            linux.permitted_caps = boom
            init._drop_privileges(spec, 0, 0, [], None)
            with open("/proc/self/status") as f:
                fields = dict(line.split(":\t", 1) for line in f if ":\t" in line)
            os.write(w, f"{fields['CapBnd'].strip()} {fields['CapEff'].strip()}".encode())
            os._exit(0)
        except BaseException as e:
            os.write(w, f"error {e}".encode())
            os._exit(1)
    os.close(w)
    out = os.read(r, 4096).decode()
    os.close(r)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, out
    expected = f"{linux.cap_mask(DEFAULT_CAPS):016x}"
    assert out == f"{expected} {expected}"
