"""The supervisor's forked child: everything between fork and the container's exec.

It makes itself non-dumpable, closes every descriptor it does not need, joins the cgroups,
enters or makes the namespaces and forks PID 1, which runtime/init.py sets up. Imported by the
supervisor up front, so a child never pays for an import.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal

# Imported here, not in the child: a forked child importing it would pay for it on every start.
from bocker_engine import linux
from bocker_engine.runtime import init, seccomp
from bocker_engine.runtime.spec import ProcessSpec


@functools.cache
def _host_caps() -> tuple[int, int]:
    """The kernel's last capability and the supervisor's permitted set, read once on the host."""
    return linux.last_cap(), linux.permitted_caps()


def prepare_confinement(spec: ProcessSpec) -> bytes | None:
    """What the container's init needs from the host, computed here before it forks: the
    capability figures and the compiled seccomp filter (None: unconfined)."""
    spec.host_last_cap, spec.host_permitted_caps = _host_caps()
    return seccomp.compile_filter(spec.seccomp) if spec.seccomp is not None else None


def child_main(
    spec: ProcessSpec,
    stdio: tuple[int, int, int],
    console: int,
    err_w: int,
    sync_w: int,
    filter_bpf: bytes | None,
    gate: int = -1,
) -> None:
    """The forked child: enter (or make) the namespaces, fork PID 1, report its pid, exit."""
    try:
        # Not dumpable until exec: nothing in a container may ptrace us or open our /proc/<pid>/fd
        # while we still hold the supervisor's descriptors (runc's CVE-2016-9962 fix), and
        # those descriptors (other containers' ptys and pipes, the supervisor's sockets) are
        # closed before any namespace is entered (the CVE-2024-21626 class).
        linux.prctl(linux.PR_SET_DUMPABLE, 0)
        signal.set_wakeup_fd(-1)
        _close_fds_except([*stdio, console, err_w, sync_w, gate])
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        _join_cgroup(spec.cgroup_procs)
        if spec.container_pid:
            init.join_container(spec.container_pid)
        else:
            flags = linux.CLONE_NEWNS | linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | linux.CLONE_NEWPID
            if spec.netns == "host":
                pass  # keep the supervisor's (the host's) network namespace
            elif spec.netns:
                fd = os.open(spec.netns, os.O_RDONLY | os.O_CLOEXEC)
                linux.setns(fd, linux.CLONE_NEWNET)
                os.close(fd)
            else:
                flags |= linux.CLONE_NEWNET
            if spec.cgroupns:
                flags |= linux.CLONE_NEWCGROUP
            linux.unshare(flags)
        pid = os.fork()
        if pid == 0:
            try:
                if not spec.container_pid:
                    init.setup_container(spec)
                if console >= 0:
                    slave = init.create_console(console, spec.console_size, bind_console=not spec.container_pid)
                    stdio = (slave, slave, slave)
                if gate >= 0:
                    init.wait_gate(gate)
                init.exec_process(spec, stdio, err_w, filter_bpf)
            except init.InitError as e:
                _report(err_w, str(e), e.kind)
            except BaseException as e:
                _report(err_w, f"{type(e).__name__}: {e}", init.errno_kind(e))
            os._exit(127)
        os.write(sync_w, str(pid).encode())
        os._exit(0)
    except BaseException as e:
        _report(err_w, f"{type(e).__name__}: {e}", init.errno_kind(e))
        os._exit(1)


def _close_fds_except(keep: list[int]) -> None:
    """Close every descriptor above stderr but those in `keep` (the forked child's own)."""
    low = 3
    for fd in sorted({fd for fd in keep if fd >= 3}):
        if fd > low:
            linux.close_range(low, fd - 1)
        low = fd + 1
    linux.close_range(low)


def _join_cgroup(procs_files: list[str]) -> None:
    """Move this (single-threaded) process into the container's cgroups before it forks PID 1.

    On cgroup v1 we write "0" to `tasks`: moving only the calling thread skips the global
    threadgroup rwsem, whose first writer otherwise waits a whole RCU grace period (10-15 ms
    here, on every container start). v2 has no such file; there cgroup.procs takes our pid.
    """
    for path in procs_files:
        tasks = os.path.join(os.path.dirname(path), "tasks")
        try:
            with open(tasks, "w") as f:
                f.write("0")
            continue
        except FileNotFoundError:
            pass
        with open(path, "w") as f:
            f.write(str(os.getpid()))


def _report(fd: int, msg: str, kind: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps({"error": msg, "kind": kind}).encode())
