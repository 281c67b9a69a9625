"""Inside the new namespaces: mounts, pivot_root, user, capabilities, then exec.

This code runs in a freshly forked child of the supervisor, as the container's PID 1 (or as an
exec'd process that joined the container). It must not touch the supervisor's event loop; every
failure is raised as InitError, whose message the supervisor passes up to the client with
runc-like wording ("exec: \"x\": executable file not found in $PATH"), because the docker CLI
derives `docker run`'s exit status (126/127) from that text. Its kind (the errno name of what
failed) travels with it; the engine maps kinds to exit codes and statuses (engine/start_errors.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import socket
import stat
import struct
import termios
from typing import Any

from bocker_engine import linux
from bocker_engine.linux import (
    MNT_DETACH,
    MS_BIND,
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_PRIVATE,
    MS_RDONLY,
    MS_REC,
    MS_REMOUNT,
    MS_SHARED,
    MS_SLAVE,
    MS_STRICTATIME,
)
from bocker_engine.runtime.spec import DEFAULT_PATH, Mount, ProcessSpec


class InitError(Exception):
    """`kind`: the errno name of what failed ("ENOENT", "EACCES", "EISDIR", "ENOEXEC", ...), or ""."""

    def __init__(self, msg: str, kind: str = "") -> None:
        super().__init__(msg)
        self.kind = kind


def errno_kind(e: BaseException) -> str:
    """The errno name of an OSError ("ENOENT"), "" for anything else."""
    n = getattr(e, "errno", None)
    return errno.errorcode.get(n, "") if isinstance(n, int) else ""


# (name, type, major, minor): the nodes Docker creates in every container's /dev.
_DEVICES = [
    ("null", stat.S_IFCHR, 1, 3),
    ("zero", stat.S_IFCHR, 1, 5),
    ("full", stat.S_IFCHR, 1, 7),
    ("random", stat.S_IFCHR, 1, 8),
    ("urandom", stat.S_IFCHR, 1, 9),
    ("tty", stat.S_IFCHR, 5, 0),
]
_DEV_LINKS = [
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
    ("core", "/proc/kcore"),
]


def _fdpath(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


class Root:
    """The container rootfs, with every path resolved by the kernel as if it were `/`.

    Image content is untrusted: `/proc` may be a symlink to `/etc`. Targets are opened with
    openat2(RESOLVE_IN_ROOT) and mounted through /proc/self/fd, as runc does with securejoin.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        self.real = os.readlink(_fdpath(self.fd))

    def inside(self, fd: int) -> str:
        """Where an fd from target() really is, as a path inside the root ("/proc/sys/...")."""
        real = os.readlink(_fdpath(fd))
        rel = os.path.relpath(real, self.real)
        return "/" if rel == "." else "/" + rel

    def refuse_special(self, fd: int, source: str | None, path: str) -> None:
        """runc's rule: nothing is mounted over anything inside /proc or /sys, whatever symlinks the
        image has on the way there (a bind onto /proc/sys/... would write to the host's kernel)."""
        where = self.inside(fd)
        for top in ("/proc", "/sys"):
            if where == top or where.startswith(top + "/"):
                raise InitError(
                    f"error mounting {source!r} to rootfs at {path!r}: "
                    f'"{where}" cannot be mounted because it is inside {top}'
                )

    def _mkdirs(self, rel: str) -> int:
        fd = os.dup(self.fd)
        try:
            for part in [p for p in rel.split("/") if p and p != "."]:
                try:
                    nfd = linux.openat2(fd, part, os.O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    # No O_PATH fd can mkdir: reopen the parent as a directory for mkdirat.
                    try:
                        os.mkdir(part, 0o755, dir_fd=fd)
                    except FileExistsError:
                        pass
                    nfd = linux.openat2(fd, part, os.O_PATH | os.O_DIRECTORY)
                os.close(fd)
                fd = nfd
            return fd
        except BaseException:
            os.close(fd)
            raise

    def target(self, path: str, *, directory: bool = True, create: bool = True, user: str | None = None) -> int:
        """An O_PATH fd for `path` inside the root, created (as a dir or empty file) if missing.
        `user`: the mount's source, for a user-given target, which must not lead into /proc or /sys."""
        rel = path.strip("/")
        parent, _, name = rel.rpartition("/")
        if directory:
            if not create:
                return linux.openat2(self.fd, rel or ".", os.O_PATH | os.O_DIRECTORY)
            if user is not None:
                # Checked before anything is created on the way.
                pfd = self._mkdirs(parent)
                try:
                    self.refuse_special(pfd, user, path)
                finally:
                    os.close(pfd)
            fd = self._mkdirs(rel)
            if user is not None:
                try:
                    self.refuse_special(fd, user, path)
                except BaseException:
                    os.close(fd)
                    raise
            return fd
        pfd = self._mkdirs(parent) if create else linux.openat2(self.fd, parent or ".", os.O_PATH)
        try:
            if user is not None:
                self.refuse_special(pfd, user, path)
                fd = self._file(pfd, rel, name, create)
                try:
                    self.refuse_special(fd, user, path)
                except BaseException:
                    os.close(fd)
                    raise
                return fd
            return self._file(pfd, rel, name, create)
        finally:
            os.close(pfd)

    def _file(self, pfd: int, rel: str, name: str, create: bool) -> int:
        # The last component may be the image's symlink: resolved from the root, like every other.
        try:
            return linux.openat2(self.fd, rel, os.O_PATH)
        except FileNotFoundError:
            if not create:
                raise
        # mknod on an O_PATH parent is not allowed; go through its /proc path, which the kernel
        # resolved already and which cannot be swapped under us.
        try:
            fd = os.open(f"{_fdpath(pfd)}/{name}", os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise InitError(f"mount target /{rel} is a symlink to nowhere in the container") from None
            raise
        os.close(fd)
        return linux.openat2(pfd, name, os.O_PATH)

    def mount(
        self,
        source: str | None,
        path: str,
        fstype: str | None,
        flags: int = 0,
        data: str | None = None,
        *,
        directory: bool = True,
        user: bool = False,
    ) -> None:
        fd = self.target(path, directory=directory, user=(source or "") if user else None)
        try:
            linux.mount(source, _fdpath(fd), fstype, flags, data)
        except OSError as e:
            reason = (e.strerror or str(e)).lower()
            raise InitError(f"error mounting {source!r} to rootfs at {path!r}: {reason}", errno_kind(e)) from None
        finally:
            os.close(fd)

    def close(self) -> None:
        os.close(self.fd)


def _remount_ro(path: str, extra: int = 0) -> None:
    linux.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | extra)


def _setup_dev(root: Root, spec: ProcessSpec) -> None:
    root.mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
    dev = root.target("/dev")
    try:
        for name, kind, major, minor in _DEVICES:
            os.mknod(name, kind | 0o666, os.makedev(major, minor), dir_fd=dev)
            # umask would have trimmed the mode; Docker's nodes are 0666.
            os.chmod(f"{_fdpath(dev)}/{name}", 0o666)
        for name, target in _DEV_LINKS:
            os.symlink(target, name, dir_fd=dev)
        for name in ("pts", "shm", "mqueue"):
            os.mkdir(name, 0o755, dir_fd=dev)
    finally:
        os.close(dev)
    for d in spec.devices:
        _make_device(root, d)
    root.mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=0620,gid=5")
    root.mount("shm", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={spec.shm_size}")
    root.mount("mqueue", "/dev/mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def _make_device(root: Root, d: dict[str, Any]) -> None:
    """A node from `--device` (or the host's under --privileged), with the host node's mode and owner."""
    path = str(d["path"])
    parent, _, name = path.strip("/").rpartition("/")
    pfd = root.target("/" + parent)
    try:
        node = f"{_fdpath(pfd)}/{name}"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(node)
        kind = stat.S_IFCHR if d["kind"] == "c" else stat.S_IFBLK
        try:
            os.mknod(node, kind | (int(d["mode"]) & 0o7777), os.makedev(int(d["major"]), int(d["minor"])))
        except OSError as e:
            raise InitError(
                f"error creating device node {path}: {(e.strerror or str(e)).lower()}", errno_kind(e)
            ) from None
        os.chmod(node, int(d["mode"]) & 0o7777)
        os.chown(node, int(d["uid"]), int(d["gid"]))
    finally:
        os.close(pfd)


_FLAG_OPTIONS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "ro": MS_RDONLY,
    "strictatime": MS_STRICTATIME,
}


def _split_options(options: str) -> tuple[int, str | None]:
    """ "mode=755,nosuid" -> (MS_NOSUID, "mode=755"): flags for mount(2), the rest as data."""
    flags = 0
    data = []
    for opt in filter(None, options.split(",")):
        if opt in _FLAG_OPTIONS:
            flags |= _FLAG_OPTIONS[opt]
        elif opt not in ("rw", "relatime"):
            data.append(opt)
    return flags, ",".join(data) or None


def _setup_cgroup(root: Root, mounts: list[Mount]) -> None:
    for m in mounts:
        flags, data = _split_options(m.options)
        if m.kind == "tmpfs":
            root.mount("cgroup", m.target, "tmpfs", flags or (MS_NOSUID | MS_NODEV | MS_NOEXEC), data or "mode=755")
        elif m.kind == "bind":
            root.mount(m.source, m.target, None, MS_BIND | MS_REC)
            if m.readonly:
                fd = root.target(m.target)
                try:
                    _remount_ro(_fdpath(fd), flags)
                finally:
                    os.close(fd)
        elif m.kind == "cgroup2":
            root.mount("cgroup2", m.target, "cgroup2", flags | (MS_RDONLY if m.readonly else 0), data)
        elif m.kind == "symlink":
            parent = root.target(os.path.dirname(m.target))
            try:
                os.symlink(m.source, os.path.basename(m.target), dir_fd=parent)
            except FileExistsError:
                pass
            finally:
                os.close(parent)
        elif m.kind == "remount-ro":
            fd = root.target(m.target)
            try:
                _remount_ro(_fdpath(fd), flags)
            finally:
                os.close(fd)


# Bind propagation (`-v src:dst:rslave`, `bind-propagation=`), carried in a bind Mount's options.
_PROPAGATION = {
    "private": MS_PRIVATE,
    "rprivate": MS_PRIVATE | MS_REC,
    "slave": MS_SLAVE,
    "rslave": MS_SLAVE | MS_REC,
    "shared": MS_SHARED,
    "rshared": MS_SHARED | MS_REC,
}


def _root_propagation(mounts: list[Mount]) -> int:
    """A shared or slave bind needs the container's tree to stay a slave of the host so that
    host mounts reach it; never shared with the host, or the container's own mounts (proc,
    dev) would propagate out."""
    props = {m.options for m in mounts if m.kind == "bind"}
    if props & {"shared", "rshared", "slave", "rslave"}:
        return MS_SLAVE
    return MS_PRIVATE


def _setup_mounts(root: Root, mounts: list[Mount]) -> None:
    for m in mounts:
        if m.kind == "bind":
            is_dir = os.path.isdir(m.source)
            root.mount(m.source, m.target, None, MS_BIND | MS_REC, directory=is_dir, user=True)
            if m.readonly or m.options in _PROPAGATION:
                fd = root.target(m.target, directory=is_dir, create=False)
                try:
                    if m.readonly:
                        _remount_ro(_fdpath(fd))
                    if m.options in _PROPAGATION:
                        linux.mount(None, _fdpath(fd), None, _PROPAGATION[m.options])
                finally:
                    os.close(fd)
        elif m.kind == "tmpfs":
            flags, data = _split_options(m.options)
            root.mount("tmpfs", m.target, "tmpfs", flags or (MS_NOSUID | MS_NODEV), data, user=True)


def _mask_paths(spec: ProcessSpec) -> None:
    for path in spec.masked_paths:
        try:
            if os.path.isdir(path):
                linux.mount("tmpfs", path, "tmpfs", MS_RDONLY)
            else:
                linux.mount("/dev/null", path, None, MS_BIND)
        except FileNotFoundError:
            pass
    for path in spec.readonly_paths:
        try:
            linux.mount(path, path, None, MS_BIND | MS_REC)
            _remount_ro(path, MS_NOSUID | MS_NODEV | MS_NOEXEC)
        except FileNotFoundError:
            pass


def _loopback_up() -> None:
    # SIOCGIFFLAGS / SIOCSIFFLAGS on "lo": a new network namespace starts with it down.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, req))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))


def enter_rootfs(spec: ProcessSpec) -> None:
    """Build the container's mount namespace and pivot into it (we are PID 1 of a new PID ns)."""
    linux.mount(None, "/", None, MS_REC | _root_propagation(spec.mounts))
    linux.mount(spec.rootfs, spec.rootfs, None, MS_BIND | MS_REC)
    root = Root(spec.rootfs)
    try:
        root.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
        _setup_dev(root, spec)
        root.mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY)
        _setup_cgroup(root, spec.cgroup_mounts)
        _setup_mounts(root, spec.mounts)
    finally:
        root.close()
    os.chdir(spec.rootfs)
    # pivot_root(".", ".") stacks the old root under the new one; unmounting it lazily leaves
    # only the container's tree, without needing a scratch directory in the image.
    linux.pivot_root(".", ".")
    linux.umount(".", MNT_DETACH)
    os.chdir("/")
    if not spec.privileged:
        _mask_paths(spec)
    if spec.readonly_rootfs:
        _remount_ro("/")
    for key, value in spec.sysctls.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(value)


# ---- users ----------------------------------------------------------------------------------


def _read_db(path: str) -> list[list[str]]:
    try:
        with open(path, errors="replace") as f:
            return [line.rstrip("\n").split(":") for line in f if line.strip() and not line.startswith("#")]
    except OSError:
        return []


def resolve_user(user: str) -> tuple[int, int, list[int], str]:
    """uid, gid, supplementary gids and home for Docker's `--user` forms (name|uid[:group|gid])."""
    name, _, group = user.partition(":")
    passwd = _read_db("/etc/passwd")
    uid, gid, home, username = 0, 0, "/", "root"
    if name:
        entry = next((e for e in passwd if len(e) >= 6 and e[0] == name), None)
        if entry is None and name.isdigit():
            entry = next((e for e in passwd if len(e) >= 6 and e[2] == name), None)
            if entry is None:
                # A numeric uid need not exist in the image; its group is then root's.
                uid, gid, home, username = int(name), 0, "/", ""
        if entry is None and not name.isdigit():
            raise InitError(f"unable to find user {name}: no matching entries in passwd file")
        if entry is not None:
            username, uid, gid, home = entry[0], int(entry[2]), int(entry[3]), entry[5] or "/"
    else:
        entry = next((e for e in passwd if len(e) >= 6 and e[2] == "0"), None)
        if entry is not None:
            home = entry[5] or "/"
    groups = _read_db("/etc/group")
    if group:
        g = next((e for e in groups if len(e) >= 3 and e[0] == group), None)
        if g is not None:
            gid = int(g[2])
        elif group.isdigit():
            gid = int(group)
        else:
            raise InitError(f"unable to find group {group}: no matching entries in group file")
    extra = sorted(
        {int(e[2]) for e in groups if len(e) >= 4 and username and username in e[3].split(",") and int(e[2]) != gid}
    )
    return uid, gid, extra, home


def resolve_groups(names: list[str]) -> list[int]:
    """`--group-add`: each a group name from the container's /etc/group, or a numeric gid."""
    if not names:
        return []
    groups = _read_db("/etc/group")
    out = []
    for name in names:
        g = next((e for e in groups if len(e) >= 3 and e[0] == name), None)
        if g is not None:
            out.append(int(g[2]))
        elif name.isdigit():
            out.append(int(name))
        else:
            raise InitError(f"unable to find group {name}: no matching entries in group file")
    return out


# ---- process --------------------------------------------------------------------------------


def _find_executable(cmd: str, env: list[str]) -> str:
    if "/" in cmd:
        try:
            st = os.stat(cmd)
        except FileNotFoundError:
            raise InitError(f'exec: "{cmd}": stat {cmd}: no such file or directory', "ENOENT") from None
        if stat.S_ISDIR(st.st_mode):
            raise InitError(f'exec: "{cmd}": is a directory', "EISDIR")
        if not os.access(cmd, os.X_OK):
            raise InitError(f'exec: "{cmd}": permission denied', "EACCES")
        return cmd
    path = next((e[5:] for e in env if e.startswith("PATH=")), DEFAULT_PATH)
    for d in path.split(":"):
        candidate = os.path.join(d or ".", cmd)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    raise InitError(f'exec: "{cmd}": executable file not found in $PATH', "ENOENT")


def _drop_privileges(spec: ProcessSpec, uid: int, gid: int, groups: list[int], seccomp: bytes | None) -> None:
    """User, capabilities, no_new_privs and seccomp, in runc's order.

    The capability figures come from the host (the supervisor reads them before the container's
    root exists); nothing here reads the container's /proc. Seccomp goes last: with no_new_privs,
    after everything else; without it, loading a filter needs CAP_SYS_ADMIN, so it goes in just
    before the final capset that gives that up (capset is allowed by Docker's profile, as runc
    relies on too).
    """
    last = spec.host_last_cap if spec.host_last_cap >= 0 else len(linux.CAPS) - 1
    permitted = spec.host_permitted_caps if spec.host_permitted_caps >= 0 else (1 << (last + 1)) - 1
    caps = list(linux.CAP_NUMBERS) if spec.privileged else spec.caps
    # Never more than we have: capset(2) refuses to grant what the supervisor lacks.
    keep = linux.cap_mask([c for c in caps if c in linux.CAP_NUMBERS and linux.CAP_NUMBERS[c] <= last]) & permitted
    for cap in range(last + 1):
        if not keep & (1 << cap):
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)
    # Docker gives root the default set and a non-root user no effective capabilities (the
    # bounding set still limits what setuid binaries can regain); inheritable stays empty.
    mask = keep if uid == 0 else 0
    if spec.no_new_privileges:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    if seccomp is not None and not spec.no_new_privileges:
        # setuid to non-root cleared the effective set; KEEPCAPS kept the permitted one.
        linux.capset(permitted, permitted, 0)
        _load_seccomp(seccomp)
        linux.capset(mask, mask, 0)
        return
    linux.capset(mask, mask, 0)
    if seccomp is not None:
        _load_seccomp(seccomp)


def _load_seccomp(program: bytes) -> None:
    try:
        linux.seccomp_set_filter(program)
    except OSError as e:
        raise InitError(
            f"error loading seccomp filter into kernel: {(e.strerror or str(e)).lower()}", errno_kind(e)
        ) from None


def _setup_stdio(fds: tuple[int, int, int], tty: bool) -> None:
    for target, fd in enumerate(fds):
        if fd != target:
            os.dup2(fd, target)
    if tty:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _env_pair(entry: str) -> tuple[str, str]:
    key, _, value = entry.partition("=")
    return key, value


def exec_process(
    spec: ProcessSpec, stdio: tuple[int, int, int], keep_fd: int, seccomp: bytes | None = None
) -> None:
    """Switch user, set up stdio, capabilities and seccomp (`seccomp`: the compiled filter), and execve.
    Only returns by raising."""
    uid, gid, groups, home = resolve_user(spec.user)
    groups = sorted(set(groups) | set(resolve_groups(spec.group_add)))
    env = list(spec.env)
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, "PATH=" + DEFAULT_PATH)
    if not any(e.startswith("HOME=") for e in env):
        env.append("HOME=" + home)
    cwd = spec.cwd or "/"
    if not spec.container_pid:
        # A container's WORKDIR is made on start (dockerd does); an exec's must exist (runc).
        try:
            os.makedirs(cwd, 0o755, exist_ok=True)
        except OSError as e:
            raise InitError(f"mkdir {cwd}: {e.strerror}", errno_kind(e)) from None
    os.setsid()
    _setup_stdio(stdio, spec.tty)
    _drop_privileges(spec, uid, gid, groups, seccomp)
    try:
        os.chdir(cwd)
    except OSError as e:
        # A missing working directory is not a missing command: dockerd maps ENOENT to 127 only
        # when the message names the command, so this one keeps the default code (126 for exec).
        kind = "" if e.errno == errno.ENOENT else errno_kind(e)
        reason = (e.strerror or "").lower()
        raise InitError(f'chdir to cwd ("{cwd}") set in config.json failed: {reason}', kind) from None
    args = list(spec.args)
    if spec.init_path:
        args = ["/sbin/docker-init", "--", *args]
    if not args:
        raise InitError("no command specified")
    path = _find_executable(args[0], env)
    # Close everything the supervisor had open except the error pipe (close-on-exec).
    linux.close_range(3, keep_fd - 1)
    linux.close_range(keep_fd + 1)
    try:
        os.execve(path, args, dict(_env_pair(e) for e in env))
    except OSError as e:
        if e.errno == errno.EACCES:
            raise InitError(f'exec: "{args[0]}": permission denied', "EACCES") from None
        if e.errno == errno.ENOENT:
            raise InitError(f'exec: "{args[0]}": no such file or directory', "ENOENT") from None
        raise InitError(f"exec {args[0]}: {e.strerror}", errno_kind(e)) from None


# How long a container's process waits at its gate before giving up (the engine opens it, or
# closes it to abandon the start, within milliseconds; it may have died meanwhile).
GATE_TIMEOUT = 60.0


def wait_gate(fd: int) -> None:
    """Hold the process, set up, until the engine says go: one byte on the gate pipe; EOF
    (the start was abandoned) or nothing within GATE_TIMEOUT ends the start instead."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        ready = poller.poll(GATE_TIMEOUT * 1000)
        data = os.read(fd, 1) if ready else None
    finally:
        os.close(fd)
    if data is None:
        raise InitError("timed out waiting for the container's network setup")
    if data != b"1":
        raise InitError("the container's network setup failed")


def setup_container(spec: ProcessSpec) -> None:
    """Everything a container's PID 1 does before exec_process (namespaces already made)."""
    if spec.hostname:
        socket.sethostname(spec.hostname)
    if not spec.netns:
        _loopback_up()
    enter_rootfs(spec)


# asm-generic/ioctls.h (the termios module lacks them)
_TIOCSPTLCK = 0x40045431
_TIOCGPTN = 0x80045430


def create_console(sock: int, size: tuple[int, int], bind_console: bool = True) -> int:
    """A pty from the container's own devpts (so `tty` says /dev/pts/0, as in Docker); the
    master goes to the supervisor over `sock`, the slave is returned for stdio and, for a
    container's first process (`bind_console`), bound on /dev/console, as runc does. An exec
    shares the container's mount namespace, so it leaves /dev/console alone."""
    master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    fcntl.ioctl(master, _TIOCSPTLCK, struct.pack("i", 0))
    n = struct.unpack("I", fcntl.ioctl(master, _TIOCGPTN, struct.pack("I", 0)))[0]
    slave_path = f"/dev/pts/{n}"
    slave = os.open(slave_path, os.O_RDWR | os.O_NOCTTY)
    h, w = size
    if h and w:
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", h, w, 0, 0))
    with contextlib.suppress(OSError):
        if not bind_console:
            raise OSError("no console for an exec")
        if not os.path.exists("/dev/console"):
            os.close(os.open("/dev/console", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
        linux.mount(slave_path, "/dev/console", None, MS_BIND)
    socket.send_fds(socket.socket(fileno=os.dup(sock)), [b"c"], [master])
    os.close(master)
    return slave


# The namespaces an exec joins, in runc's order (nsexec.c): mnt last, since after it the
# host's /proc is out of sight. The PID namespace applies to our children.
_JOIN_NS = (
    ("cgroup", linux.CLONE_NEWCGROUP),
    ("ipc", linux.CLONE_NEWIPC),
    ("uts", linux.CLONE_NEWUTS),
    ("net", linux.CLONE_NEWNET),
    ("pid", linux.CLONE_NEWPID),
    ("mnt", linux.CLONE_NEWNS),
)


def join_container(pid: int) -> None:
    """Join an existing container's namespaces (exec). All are opened first, through the
    container's pid 1 as the host sees it; one we already share (the host's network with
    --network host, the host's cgroup namespace on v1) is left as it is."""
    fds: list[tuple[int, int]] = []
    try:
        for name, kind in _JOIN_NS:
            theirs = f"/proc/{pid}/ns/{name}"
            try:
                if os.stat(theirs).st_ino == os.stat(f"/proc/self/ns/{name}").st_ino:
                    continue
            except FileNotFoundError:
                if name == "cgroup":
                    continue  # a kernel without cgroup namespaces
                raise InitError(f"container process {pid} is gone") from None
            fds.append((os.open(theirs, os.O_RDONLY | os.O_CLOEXEC), kind))
        for fd, kind in fds:
            linux.setns(fd, kind)
    finally:
        for fd, _ in fds:
            os.close(fd)
    # setns(CLONE_NEWNS) put our root and cwd at the container's root; nothing of the host's
    # filesystem stays reachable through a cwd.
    os.chdir("/")
