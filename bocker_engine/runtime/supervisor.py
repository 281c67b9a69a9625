"""The supervisor: one process that creates, watches and serves the stdio of every container.

Why one process and not a monitor per container (containerd-shim, conmon): a Python process
costs 9-20 MiB RSS, so 50 per-container monitors would cost more than dockerd with its shims.
One asyncio supervisor holds every container's pipes, writes the json-file logs, serves attach
and reaps exits (it is a child subreaper), for ~20 MiB in total. It runs in its own session
and outlives bockerd, so containers keep running across a daemon restart (live restore); the
daemon reconnects to it through a unix socket.

Protocol (JSON lines on <root>/supervisor.sock; each connection carries one request at a time,
and connections are served concurrently, so the daemon keeps a pool of them):
  {"op": "start", "spec": {...}}         -> {"pid": N, "started_at": ns} | {"error": msg, "kind": k}
                                             (k: errno name of what failed, "" if none; init.InitError)
  {"op": "kill", "id": x, "signal": n}   -> {}
  {"op": "resize", "id": x, "h": r, "w": c}
  {"op": "list"}                          -> {"procs": [{id, pid, running, exit_code, ...}]}
  {"op": "forget", "id": x}               drop a process's state (container removed)
  {"op": "events"}                        then a stream of {"event": "exit", ...} lines
  {"op": "attach", "id": x, "stdin": b, "stdout": b, "stderr": b}
        -> {} then the connection is the raw stream: stdcopy frames (or raw tty bytes) out,
           stdin in; a half-close from the daemon is stdin EOF. Allowed before start.
  {"op": "shutdown"}                      kill what still runs and exit
  {"op": "features"}                      -> {"features": ["gate"]} (an older supervisor: an error)
  {"op": "open", "gate": t, "ok": b}      a start with spec.gate = t waits, set up, before exec
                                             until this: ok lets it exec, false makes it fail
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import fcntl
import json
import os
import signal
import socket
import struct
import sys
import termios
import time
from typing import Any

# Imported here, not in the child: a forked child importing it would pay for it on every start.
from bocker_engine import linux
from bocker_engine.runtime import init
from bocker_engine.runtime.child import child_main, prepare_confinement
from bocker_engine.runtime.logwriter import LogWriter
from bocker_engine.runtime.procs import (
    ATTACH_HIGH,
    ATTACH_LOW,
    ATTACH_STALL,
    MAX_FINAL_DRAIN,
    READ_SIZE,
    STDIN_HIGH,
    Attach,
    Proc,
    StdinProtocol,
)
from bocker_engine.runtime.spec import ProcessSpec
from bocker_engine.stdcopy import STDERR, STDOUT

# How long an exit waits for EOF on the process's output pipes before it is delivered anyway.
FINAL_OUTPUT_WAIT = 2.0


def _write_atomic(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Supervisor:
    def __init__(self, root: str) -> None:
        self.root = root
        self.procs: dict[str, Proc] = {}
        self.by_pid: dict[int, Proc] = {}
        self.orphan_status: dict[int, int] = {}
        self.subscribers: set[asyncio.StreamWriter] = set()
        self.starting: set[str] = set()
        # Gate token -> whether to let the process exec; set by "open" or by the start's end,
        # whichever comes first (the open may be read before its start, on another connection).
        self.gates: dict[str, asyncio.Future[bool]] = {}
        self.loop = asyncio.get_running_loop()
        self.stopping = asyncio.Event()

    # ---- child reaping --------------------------------------------------------------------

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            proc = self.by_pid.pop(pid, None)
            if proc is None:
                self.orphan_status[pid] = status
                continue
            self._exited(proc, status)

    def _exited(self, proc: Proc, status: int) -> None:
        proc.wait_status = status
        self.loop.create_task(self._finish(proc))

    async def _finish(self, proc: Proc) -> None:
        """Deliver an exit: output first (bounded), then state and event, then cleanup (and the
        state file).

        Every step is guarded on its own: whatever fails in the stdio path, the exit is
        recorded and published, since a container never reported as exited can be neither
        stopped nor removed."""
        status = proc.wait_status or 0
        code = os.waitstatus_to_exitcode(status)
        code = 128 - code if code < 0 else code
        try:
            # Output still in the pipes belongs before the exit: wait for EOF on them, bounded,
            # since a leaked descriptor elsewhere must not keep the container "running". Output
            # held back for a slow attach client is not waited for: it is read below.
            if proc.readers and not proc.output_paused:
                proc.output_waiter = self.loop.create_future()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.output_waiter, FINAL_OUTPUT_WAIT)
        except Exception:
            log_error(f"waiting for the output of {proc.id}")
        finally:
            proc.output_waiter = None
        for fd in list(proc.readers):
            _guarded(f"draining output of {proc.id}", self._drain, proc, fd)
            _guarded(f"closing output of {proc.id}", self._close_reader, proc, fd)
        proc.output_paused = False
        if proc.log is not None:
            _guarded(f"closing the log of {proc.id}", proc.log.close)
            proc.log = None
        proc.running = False
        proc.exit_code = code
        proc.finished_at = time.time_ns()
        _guarded(f"publishing the exit of {proc.id}", self._publish, {"event": "exit", **proc.info()})
        # Cleanup, after the exit is out.
        _guarded(f"closing stdin of {proc.id}", self._close_stdin, proc)
        if proc.master >= 0:
            _guarded(f"closing the pty of {proc.id}", self.loop.remove_writer, proc.master)
            _guarded(f"closing the pty of {proc.id}", os.close, proc.master)
            proc.master = -1
        if proc.pidfd >= 0:
            _guarded(f"closing the pidfd of {proc.id}", os.close, proc.pidfd)
            proc.pidfd = -1
        for a in list(proc.attaches):
            _guarded(f"closing an attach of {proc.id}", a.close)
        proc.attaches.clear()
        # The state file is a record for people (nothing reads it back): a file creation can
        # wait on the filesystem's journal, so it comes after the exit and the streams are out.
        _guarded(f"recording the exit of {proc.id}", self._record, proc)

    def _close_stdin(self, proc: Proc) -> None:
        transport, proc.stdin_transport = proc.stdin_transport, None
        proc.stdin_proto = None
        proc.pty_in.clear()
        # abort() on a pipe transport that already closed itself (the reader went away)
        # raises inside asyncio: only a live transport is aborted.
        if transport is not None and not transport.is_closing():
            transport.abort()

    def _record_running(self, proc: Proc) -> None:
        if proc.running:
            _guarded(f"recording the start of {proc.id}", self._record, proc)

    def _record(self, proc: Proc) -> None:
        if proc.spec is not None and proc.spec.container_pid:
            return  # an exec: the daemon has its exit from the event and forgets it then
        with contextlib.suppress(OSError):
            _write_atomic(os.path.join(self.root, "state", f"{proc.id}.json"), json.dumps(proc.info()).encode())

    def _publish(self, event: dict[str, Any]) -> None:
        line = json.dumps(event).encode() + b"\n"
        for w in list(self.subscribers):
            if w.is_closing():
                self.subscribers.discard(w)
                continue
            try:
                w.write(line)
            except Exception:
                log_error("writing an event")
                self.subscribers.discard(w)

    # ---- output ---------------------------------------------------------------------------

    def _on_readable(self, proc: Proc, fd: int) -> None:
        stream = proc.readers.get(fd)
        if stream is None:
            return
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return
        except OSError as e:
            # EIO from a pty master means every slave is closed: end of output. Any other
            # error ends this stream too, rather than firing again forever.
            if e.errno not in (errno.EIO, errno.EBADF):
                log_error(f"reading output of {proc.id}")
            data = b""
        if not data:
            _guarded(f"closing output of {proc.id}", self._close_reader, proc, fd)
            return
        self._emit(proc, stream, data)
        if not proc.output_paused and any(a.backlog() > ATTACH_HIGH for a in proc.attaches):
            self._pause_output(proc)

    def _emit(self, proc: Proc, stream: int, data: bytes) -> None:
        if proc.log is not None:
            try:
                proc.log.write(stream, data)
            except Exception:
                log_error(f"writing the log of {proc.id}")
        for a in list(proc.attaches):
            a.send(stream, data, proc.tty)

    def _pause_output(self, proc: Proc) -> None:
        """An attach client is far behind: stop reading the container's output until it catches
        up (the container blocks on its pipe, as with dockerd), or drop it if it stalls."""
        proc.output_paused = True
        proc.wake_output_waiter()
        for fd in proc.readers:
            self.loop.remove_reader(fd)
        self.loop.create_task(self._resume_output(proc))

    async def _resume_output(self, proc: Proc) -> None:
        progress: dict[Attach, tuple[int, float]] = {}
        try:
            while proc.output_paused:
                now = self.loop.time()
                behind = False
                for a in list(proc.attaches):
                    size = a.backlog()
                    if size <= ATTACH_LOW:
                        progress.pop(a, None)
                        continue
                    last = progress.get(a)
                    if last is None or size < last[0]:
                        progress[a] = (size, now)
                    elif now - last[1] > ATTACH_STALL:
                        log_error(f"attach client of {proc.id} stopped reading; disconnecting it", trace=False)
                        a.drop()
                        proc.attaches.discard(a)
                        continue
                    behind = True
                if not behind:
                    break
                await asyncio.sleep(0.02)
        finally:
            if proc.output_paused:
                proc.output_paused = False
                for fd in proc.readers:
                    _guarded(f"resuming output of {proc.id}", self.loop.add_reader, fd, self._on_readable, proc, fd)

    def _drain(self, proc: Proc, fd: int) -> None:
        """Read what is left after an exit, bounded."""
        stream = proc.readers.get(fd)
        if stream is None:
            return
        left = MAX_FINAL_DRAIN
        while left > 0:
            try:
                data = os.read(fd, min(READ_SIZE, left))
            except OSError:
                return
            if not data:
                return
            left -= len(data)
            self._emit(proc, stream, data)

    def _close_reader(self, proc: Proc, fd: int) -> None:
        if proc.readers.pop(fd, None) is None:
            return
        self.loop.remove_reader(fd)
        if fd != proc.master:
            os.close(fd)
        if not proc.readers:
            proc.wake_output_waiter()

    # ---- stdin ----------------------------------------------------------------------------

    def _stdin_data(self, proc: Proc, data: bytes) -> None:
        if not proc.running:
            # `docker run -i` may send stdin before start: keep it for the process.
            proc.pending_stdin += data
        elif proc.stdin_closed:
            return
        elif proc.stdin_transport is not None:
            if not proc.stdin_transport.is_closing():
                proc.stdin_transport.write(data)
        elif proc.master >= 0:
            proc.pty_in += data
            self._write_pty(proc)

    def _write_pty(self, proc: Proc) -> None:
        """Write pending stdin to the pty master without blocking; the rest waits for POLLOUT."""
        if proc.master < 0:
            proc.pty_in.clear()
            return
        try:
            n = os.write(proc.master, proc.pty_in)
        except BlockingIOError:
            n = 0
        except OSError:
            proc.pty_in.clear()  # the terminal is gone: so is this input
            n = 0
        del proc.pty_in[:n]
        with contextlib.suppress(Exception):
            self.loop.remove_writer(proc.master)
        if proc.pty_in:
            self.loop.add_writer(proc.master, self._write_pty, proc)

    def _stdin_backlog(self, proc: Proc) -> bool:
        """Whether an attach connection should wait before feeding more stdin."""
        if proc.stdin_proto is not None and not proc.stdin_proto.writable.is_set():
            return True
        return len(proc.pty_in) > STDIN_HIGH or len(proc.pending_stdin) > STDIN_HIGH

    async def _stdin_room(self, proc: Proc, att: Attach) -> None:
        while self._stdin_backlog(proc) and not att.finished.is_set():
            if proc.stdin_proto is not None and not proc.stdin_proto.writable.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(proc.stdin_proto.writable.wait(), 0.5)
            else:
                await asyncio.sleep(0.02)

    def _stdin_eof(self, proc: Proc) -> None:
        if not proc.running:
            proc.pending_eof = True
            return
        if proc.spec is None or not proc.spec.stdin_once or proc.stdin_closed:
            return
        proc.stdin_closed = True
        if proc.stdin_transport is not None:
            transport, proc.stdin_transport = proc.stdin_transport, None
            transport.close()  # after what is buffered; a no-op on a closed transport
        elif proc.master >= 0:
            # A tty has no half-close: send the terminal's EOF character, as dockerd does.
            proc.pty_in += b"\x04"
            self._write_pty(proc)

    # ---- start ----------------------------------------------------------------------------

    async def start(self, spec: ProcessSpec) -> dict[str, Any]:
        proc = self.procs.get(spec.id)
        if proc is None:
            proc = self.procs[spec.id] = Proc(spec.id)
        if proc.running or spec.id in self.starting:
            return {"error": f"process {spec.id} is already running", "kind": ""}
        # Starts are served concurrently (one per connection): while this one waits for its
        # child, another process's start may run, but never a second one of the same id.
        self.starting.add(spec.id)
        try:
            return await self._start(proc, spec)
        finally:
            self.starting.discard(spec.id)
            if spec.gate:
                self.open_gate(spec.gate, False)  # not opened by now: nobody will
                self.gates.pop(spec.gate, None)

    def _gate(self, token: str) -> asyncio.Future[bool]:
        fut = self.gates.get(token)
        if fut is None:
            fut = self.gates[token] = self.loop.create_future()
        return fut

    def open_gate(self, token: str, ok: bool) -> None:
        """Let a starting process exec (ok), or make it give up (EOF on its gate)."""
        fut = self._gate(token)
        if not fut.done():
            fut.set_result(ok)

    def _hold_gate(self, token: str, fd: int) -> None:
        """The write end of a start's gate: one byte when it opens, closed either way."""

        def opened(fut: asyncio.Future[bool]) -> None:
            try:
                if fut.result():
                    os.write(fd, b"1")
            except OSError:
                pass  # the process is gone already: its start reports why
            finally:
                os.close(fd)

        self._gate(token).add_done_callback(opened)

    async def _start(self, proc: Proc, spec: ProcessSpec) -> dict[str, Any]:
        try:
            filter_bpf = prepare_confinement(spec)
        except Exception as e:
            return {"error": str(e), "kind": init.errno_kind(e)}
        proc.spec = spec
        proc.exit_code = None
        proc.stdin_closed = False
        child_fds: list[int] = []
        parent_fds: list[int] = []
        try:
            console: socket.socket | None = None
            if spec.tty:
                # The pty is made inside the container (its devpts); the master comes back here.
                console, console_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
                child_fds.append(console_child.detach())
                stdio = (-1, -1, -1)
            else:
                out_r, out_w = os.pipe2(os.O_CLOEXEC)
                err_r, err_w = os.pipe2(os.O_CLOEXEC)
                if spec.open_stdin:
                    in_r, in_w = os.pipe2(os.O_CLOEXEC)
                    parent_fds.append(in_w)
                else:
                    in_r = os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)
                    in_w = -1
                child_fds += [in_r, out_w, err_w]
                for fd, stream in ((out_r, STDOUT), (err_r, STDERR)):
                    os.set_blocking(fd, False)
                    proc.readers[fd] = stream
                    parent_fds.append(fd)
                stdio = (in_r, out_w, err_w)
            err_r2, err_w2 = os.pipe2(os.O_CLOEXEC)
            sync_r, sync_w = os.pipe2(os.O_CLOEXEC)
            child_fds += [err_w2, sync_w]
            gate_r = -1
            if spec.gate:
                gate_r, gate_w = os.pipe2(os.O_CLOEXEC)
                child_fds.append(gate_r)
                self._hold_gate(spec.gate, gate_w)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - runs in the child
                child_main(spec, stdio, child_fds[0] if spec.tty else -1, err_w2, sync_w, filter_bpf, gate_r)
            for fd in child_fds:
                os.close(fd)
            child_fds = []
            grandchild = await _read_to_eof(self.loop, sync_r)
            error = await _read_to_eof(self.loop, err_r2)
            if console is not None:
                if not error and grandchild:
                    # Sent before exec, so it is waiting in the socket by now.
                    console.setblocking(False)
                    _, fds, _, _ = socket.recv_fds(console, 16, 1)
                    if fds:
                        proc.master = fds[0]
                        os.set_blocking(proc.master, False)
                        proc.readers[proc.master] = STDOUT
                        parent_fds.append(proc.master)
                console.close()
        except BaseException:
            for fd in child_fds + parent_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            proc.readers.clear()
            proc.master = -1
            raise
        if error or not grandchild:
            for fd in parent_fds:
                with contextlib.suppress(OSError):
                    os.close(fd)
            proc.readers.clear()
            proc.master = -1
            report = json.loads(error) if error else {"error": "container init exited before starting"}
            return {"error": report["error"], "kind": report.get("kind", "")}
        cpid = int(grandchild)
        proc.pid = cpid
        try:
            proc.pidfd = linux.pidfd_open(cpid)
        except ProcessLookupError:
            proc.pidfd = -1  # already exited and reaped: its status is in orphan_status
        proc.running = True
        proc.started_at = time.time_ns()
        proc.log = LogWriter.for_spec(spec)
        for fd in proc.readers:
            self.loop.add_reader(fd, self._on_readable, proc, fd)
        if spec.open_stdin and not spec.tty:
            stdin_proto = StdinProtocol()
            transport, _ = await self.loop.connect_write_pipe(lambda: stdin_proto, os.fdopen(in_w, "wb", 0))
            transport.set_write_buffer_limits(high=STDIN_HIGH)
            proc.stdin_transport = transport
            proc.stdin_proto = stdin_proto
        if proc.pending_stdin:
            data = bytes(proc.pending_stdin)
            proc.pending_stdin.clear()
            self._stdin_data(proc, data)
        if proc.pending_eof:
            proc.pending_eof = False
            self._stdin_eof(proc)
        status = self.orphan_status.pop(cpid, None)
        if status is not None:
            self._exited(proc, status)
        else:
            self.by_pid[cpid] = proc
        # After the answer (see _finish), unless the exit's own record came first.
        self.loop.call_soon(self._record_running, proc)
        return {"pid": cpid, "started_at": proc.started_at}

    # ---- connections ----------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                req = json.loads(line)
                op = req.get("op")
                if op == "attach":
                    await self._attach(req, reader, writer)
                    return
                if op == "events":
                    self.subscribers.add(writer)
                    await reader.read()  # until the daemon goes away
                    self.subscribers.discard(writer)
                    return
                try:
                    resp = await self._request(op, req)
                except Exception as e:  # report, keep serving
                    resp = {"error": f"{type(e).__name__}: {e}", "kind": init.errno_kind(e)}
                writer.write(json.dumps(resp).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, json.JSONDecodeError, asyncio.IncompleteReadError):
            pass
        finally:
            self.subscribers.discard(writer)
            with contextlib.suppress(Exception):
                writer.close()

    async def _request(self, op: str, req: dict[str, Any]) -> dict[str, Any]:
        if op == "start":
            return await self.start(ProcessSpec.from_json(req["spec"]))
        if op == "list":
            return {"procs": [p.info() for p in self.procs.values()]}
        if op == "features":
            return {"features": ["gate"]}
        if op == "open":
            token = str(req.get("gate", ""))
            if token and token not in self.gates:
                # Read before its start (or after it ended): forget it once the start is long
                # over, which is what ending it (GATE_TIMEOUT in the process) bounds.
                self.loop.call_later(init.GATE_TIMEOUT * 2, self.gates.pop, token, None)
            if token:
                self.open_gate(token, bool(req.get("ok")))
            return {}
        proc = self.procs.get(req.get("id", ""))
        if op == "kill":
            if proc is None or not proc.running or proc.pidfd < 0:
                return {"error": "not running"}
            try:
                linux.pidfd_send_signal(proc.pidfd, int(req["signal"]))
            except ProcessLookupError:
                pass
            return {}
        if op == "resize":
            if proc is not None and proc.master >= 0:
                fcntl.ioctl(proc.master, termios.TIOCSWINSZ, struct.pack("HHHH", int(req["h"]), int(req["w"]), 0, 0))
            return {}
        if op == "forget":
            if proc is not None and not proc.running:
                for a in list(proc.attaches):
                    a.close()
                self.procs.pop(proc.id, None)
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.root, "state", f"{proc.id}.json"))
            return {}
        if op == "shutdown":
            self.stopping.set()
            return {}
        return {"error": f"unknown op {op}"}

    async def _attach(self, req: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pid_id = req["id"]
        proc = self.procs.get(pid_id)
        if proc is None:
            proc = self.procs[pid_id] = Proc(pid_id)
        # Attaching to a process that is not running waits for its next start, like dockerd
        # (`docker start -a` attaches first, then starts).
        att = Attach(writer, bool(req.get("stdin")), bool(req.get("stdout", True)), bool(req.get("stderr", True)))
        proc.attaches.add(att)
        writer.write(b"{}\n")
        try:
            while not att.finished.is_set():
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if att.stdin:
                    self._stdin_data(proc, data)
                    await self._stdin_room(proc, att)
            if att.stdin and not proc.tty:
                # A TTY's input is never closed by an attach ending (dockerd): a detached
                # `docker run -it` keeps its shell and can be attached again.
                self._stdin_eof(proc)
            # Keep the connection until the process ends (the writer is closed by _finish)
            # or the client goes away.
            finished = asyncio.ensure_future(att.finished.wait())
            closed = asyncio.ensure_future(writer.wait_closed())
            try:
                await asyncio.wait({finished, closed}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for t in (finished, closed):
                    t.cancel()
                    with contextlib.suppress(BaseException):
                        await t
        except (ConnectionError, OSError):
            pass
        finally:
            proc.attaches.discard(att)

    async def shutdown(self) -> None:
        for proc in self.procs.values():
            if proc.running and proc.pidfd >= 0:
                with contextlib.suppress(OSError):
                    linux.pidfd_send_signal(proc.pidfd, signal.SIGKILL)
        deadline = self.loop.time() + 5
        while any(p.running for p in self.procs.values()) and self.loop.time() < deadline:
            await asyncio.sleep(0.01)


def log_error(what: str, trace: bool = True) -> None:
    """The supervisor's log is its stderr (supervisor.log under its root)."""
    import traceback

    print(f"supervisor: error {what}", file=sys.stderr)
    if trace and sys.exc_info()[0] is not None:
        traceback.print_exc(file=sys.stderr)


def _guarded(what: str, fn: Any, *args: Any) -> None:
    """One cleanup step: its failure is logged and never stops the steps after it."""
    try:
        fn(*args)
    except Exception:
        log_error(what)


async def _read_to_eof(loop: asyncio.AbstractEventLoop, fd: int) -> bytes:
    """Read a pipe until EOF without blocking the loop, then close it."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    done = loop.create_future()

    def readable() -> None:
        try:
            data = os.read(fd, 65536)
        except BlockingIOError:
            return
        if data:
            chunks.append(data)
            return
        loop.remove_reader(fd)
        if not done.done():
            done.set_result(None)

    loop.add_reader(fd, readable)
    try:
        await done
    finally:
        loop.remove_reader(fd)
        os.close(fd)
    return b"".join(chunks)


async def serve(root: str) -> None:
    os.makedirs(os.path.join(root, "state"), exist_ok=True)
    sup = Supervisor(root)
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGCHLD, sup.reap)
    loop.add_signal_handler(signal.SIGTERM, sup.stopping.set)
    loop.add_signal_handler(signal.SIGINT, sup.stopping.set)
    sock_path = os.path.join(root, "supervisor.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(sock_path)
    server = await asyncio.start_unix_server(sup.handle, sock_path, limit=1 << 20)
    os.chmod(sock_path, 0o600)
    _write_atomic(os.path.join(root, "supervisor.pid"), str(os.getpid()).encode())
    # Tell whoever started us that the socket is ready.
    with contextlib.suppress(OSError):
        os.write(1, b"ready\n")
        os.close(1)
    await sup.stopping.wait()
    server.close()
    await sup.shutdown()
    for path in (sock_path, os.path.join(root, "supervisor.pid")):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="bocker-supervisor")
    p.add_argument("--root", required=True)
    args = p.parse_args(argv)
    # stdin/stderr must not tie us to the daemon's terminal or pipes.
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.close(devnull)
    log_path = os.path.join(args.root, "supervisor.log")
    os.makedirs(args.root, exist_ok=True)
    logfd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(logfd, 2)
    os.close(logfd)
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    asyncio.run(serve(args.root))


if __name__ == "__main__":
    main()
