"""`docker top`: the host's `ps` over the container's processes, as dockerd does it.

`ps <ps_args> -q <pids>` runs on the host (never inside the container), then its rows are kept
when their PID column names a process of the container's cgroup. Options that cannot be combined
with -q (like `f`) are retried without it; the filter by PID is what counts.
"""

from __future__ import annotations

import asyncio
import re
from typing import TYPE_CHECKING, Any

from bocker_engine.errors import Conflict, InvalidParameter, System

if TYPE_CHECKING:
    from bocker_engine.engine.containers import ContainerService

DEFAULT_PS_ARGS = "-ef"
_PS_TIMEOUT = 30.0
# dockerd refuses renaming the PID column (`-o user=PID`), which would fool the filter.
_RENAMED_PID = re.compile(r"\s+([^\s]*)=\s*(PID[^\s]*)")


def validate_ps_args(ps_args: str) -> None:
    for key, value in _RENAMED_PID.findall(ps_args):
        if key != "pid":
            raise InvalidParameter(f'specifying "{key}={value}" is not allowed')


def _fields(line: str) -> list[str]:
    # ASCII whitespace only, like dockerd's fieldsASCII (a command may hold other spaces).
    return [f for f in re.split(r"[\t\n\f\r ]+", line) if f]


def parse_ps(output: str, pids: set[int]) -> dict[str, Any]:
    """{"Titles", "Processes"} from ps output, rows limited to `pids`. Threads (`-m`: a PID of
    "-") follow the process row before them; the last column takes any extra fields."""
    lines = output.split("\n")
    titles = _fields(lines[0]) if lines else []
    if "PID" not in titles:
        raise System("Couldn't find PID field in ps output")
    pid_index = titles.index("PID")
    processes: list[list[str]] = []
    keep_threads = False

    def add(fields: list[str]) -> None:
        n = len(titles)
        processes.append(fields[: n - 1] + [" ".join(fields[n - 1 :])])

    for line in lines[1:]:
        fields = _fields(line)
        if not fields:
            continue
        if len(fields) <= pid_index:
            continue
        if fields[pid_index] == "-":
            if keep_threads:
                add(fields)
            continue
        try:
            pid = int(fields[pid_index])
        except ValueError:
            raise System(f"Unexpected pid '{fields[pid_index]}'") from None
        keep_threads = pid in pids
        if keep_threads:
            add(fields)
    return {"Titles": titles, "Processes": processes}


async def _ps(args: list[str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "ps", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), _PS_TIMEOUT)
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
    return proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")


async def top(svc: ContainerService, ref: str, ps_args: str) -> dict[str, Any]:
    ps_args = ps_args or DEFAULT_PS_ARGS
    validate_ps_args(ps_args)
    c = svc.get(ref)
    if not c.state.Running:
        raise Conflict(f"Container {c.id} is not running")
    if c.state.Restarting:
        raise Conflict(f"Container {c.id} is restarting, wait until the container is running")
    pids = await asyncio.to_thread(svc.cgroups.pids, c.id)
    args = ps_args.split(" ")
    try:
        code, out, err = await _ps([*args, "-q" + ",".join(str(p) for p in pids)])
        if code != 0:
            code, out, err = await _ps(args)
    except FileNotFoundError:
        raise System("ps: executable file not found in $PATH") from None
    if code != 0:
        first = err.split("\n", 1)[0] or f"exit status {code}"
        raise System(f"ps: {first}")
    result = parse_ps(out, set(pids))
    svc.on_event("top", c, {})
    return result
