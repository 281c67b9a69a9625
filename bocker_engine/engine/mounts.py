"""A container's mounts: `-v`/Binds, HostConfig.Mounts (`--mount`), Tmpfs, VolumesFrom and the
image's Volumes, turned into one set of mount points the way dockerd does it (moby
volume/mounts/linux_parser.go and daemon/volumes.go), with its validation messages.

Mount points are stored in config.v2.json under "MountPoints" in dockerd's shape. What the
runtime gets is a list of spec Mounts, parents before children; the targets are resolved inside
the container's root by runtime/init.py (openat2 RESOLVE_IN_ROOT), never through host symlinks.
"""

from __future__ import annotations

import contextlib
import errno
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bocker_engine import linux
from bocker_engine.errors import EngineError, InvalidParameter
from bocker_engine.runtime.spec import Mount

if TYPE_CHECKING:
    from bocker_engine.engine.volumes import VolumeService

PROPAGATION_MODES = {"private", "rprivate", "slave", "rslave", "shared", "rshared"}
DEFAULT_PROPAGATION = "rprivate"
_RW_MODES = {"rw", "ro"}
_LABEL_MODES = {"z", "Z"}
_COPY_MODES = {"nocopy"}


# ---- mode strings (`-v src:dst:mode`) -----------------------------------------------------------


def valid_mode(mode: str) -> bool:
    if not mode:
        return True
    counts = [0, 0, 0, 0]
    for o in mode.split(","):
        for i, group in enumerate((_RW_MODES, _LABEL_MODES, PROPAGATION_MODES, _COPY_MODES)):
            if o in group:
                counts[i] += 1
                break
        else:
            return False
    return max(counts) <= 1


def read_write(mode: str) -> bool:
    return valid_mode(mode) and "ro" not in mode.split(",")


def _propagation(mode: str) -> str:
    return next((o for o in mode.split(",") if o in PROPAGATION_MODES), "")


def _nocopy(mode: str) -> bool | None:
    return True if "nocopy" in mode.split(",") else None


def _invalid_spec(raw: str) -> str:
    return f"invalid volume specification: '{raw}'"


class MountConfigError(InvalidParameter):
    def __init__(self, kind: str, err: str) -> None:
        super().__init__(f'invalid mount config for type "{kind}": {err}')
        self.reason = err


# ---- mount points -------------------------------------------------------------------------------


@dataclass
class MountPoint:
    type: str
    destination: str
    source: str = ""
    name: str = ""
    driver: str = ""
    mode: str = ""
    rw: bool = True
    propagation: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    skip_create: bool = False
    # Runtime only: copy the image's content into an empty volume on create.
    copy_data: bool = False

    @property
    def anonymous(self) -> bool:
        return self.type == "volume" and not self.spec.get("Source")

    def to_disk(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "Source": self.source,
            "Destination": self.destination,
            "RW": self.rw,
            "Name": self.name,
            "Driver": self.driver,
            "Type": self.type,
            "Spec": self.spec,
            "SkipMountpointCreation": self.skip_create,
        }
        if self.mode:
            d["Relabel"] = self.mode
        if self.propagation:
            d["Propagation"] = self.propagation
        return d

    @classmethod
    def from_disk(cls, d: dict[str, Any]) -> MountPoint:
        return cls(
            type=d.get("Type", ""),
            destination=d.get("Destination", ""),
            source=d.get("Source", ""),
            name=d.get("Name", ""),
            driver=d.get("Driver", ""),
            mode=d.get("Relabel", ""),
            rw=bool(d.get("RW", True)),
            propagation=d.get("Propagation", ""),
            spec=dict(d.get("Spec") or {}),
            skip_create=bool(d.get("SkipMountpointCreation")),
        )

    def to_api(self) -> dict[str, Any]:
        """types.MountPoint as inspect and ps show it (Name and Driver omitted when empty)."""
        d: dict[str, Any] = {"Type": self.type}
        if self.name:
            d["Name"] = self.name
        d["Source"] = self.source
        d["Destination"] = self.destination
        if self.driver:
            d["Driver"] = self.driver
        d.update({"Mode": self.mode, "RW": self.rw, "Propagation": self.propagation})
        return d


def load(disk: dict[str, Any] | None) -> dict[str, MountPoint]:
    return {dst: MountPoint.from_disk(d) for dst, d in (disk or {}).items()}


def dump(mps: dict[str, MountPoint]) -> dict[str, Any]:
    return {dst: mp.to_disk() for dst, mp in mps.items()}


# ---- parsing ------------------------------------------------------------------------------------


def _check_target(kind: str, target: str) -> None:
    if not target:
        raise MountConfigError(kind, "field Target must not be empty")
    if posixpath.normpath(target) == "/":
        raise MountConfigError(kind, "invalid specification: destination can't be '/'")
    if not target.startswith("/"):
        raise MountConfigError(kind, f"invalid mount path: '{target}' mount path must be absolute")


def tmpfs_options(opts: dict[str, Any] | None, readonly: bool) -> str:
    """moby ConvertTmpfsOptions: TmpfsOptions{SizeBytes, Mode} as mount data."""
    out = ["ro"] if readonly else []
    opts = opts or {}
    if opts.get("Mode"):
        out.append(f"mode={int(opts['Mode']):o}")
    size = int(opts.get("SizeBytes") or 0)
    if size:
        if size < 0:
            raise InvalidParameter("invalid tmpfs size")
        suffix = ""
        for sfx, div in (("g", 1 << 30), ("m", 1 << 20), ("k", 1 << 10)):
            if size % div == 0:
                size, suffix = size // div, sfx
                break
        out.append(f"size={size}{suffix}")
    return ",".join(out)


def validate_spec(cfg: dict[str, Any], check_source: bool = True) -> None:
    """moby validateMountConfigImpl, on one HostConfig.Mounts entry."""
    kind = cfg.get("Type") or ""
    _check_target(kind, cfg.get("Target") or "")
    source = cfg.get("Source") or ""
    if kind == "bind":
        if not source:
            raise MountConfigError(kind, "field Source must not be empty")
        prop = (cfg.get("BindOptions") or {}).get("Propagation") or ""
        if prop and prop not in PROPAGATION_MODES:
            raise MountConfigError(kind, f"invalid propagation mode: {prop}")
        if cfg.get("VolumeOptions") is not None:
            raise MountConfigError(kind, "field VolumeOptions must not be specified")
        if not source.startswith("/"):
            raise MountConfigError(kind, f"invalid mount path: '{source}' mount path must be absolute")
        if check_source and not os.path.exists(source):
            raise MountConfigError(kind, f"bind source path does not exist: {source}")
    elif kind == "volume":
        if cfg.get("BindOptions") is not None:
            raise MountConfigError(kind, "field BindOptions must not be specified")
        if (cfg.get("VolumeOptions") or {}).get("Subpath"):
            raise MountConfigError(kind, "volume subpaths are not supported")
        if cfg.get("ReadOnly") and not source:
            raise MountConfigError(kind, "must not set ReadOnly mode when using anonymous volumes")
    elif kind == "tmpfs":
        if cfg.get("BindOptions") is not None:
            raise MountConfigError(kind, "field BindOptions must not be specified")
        if source:
            raise MountConfigError(kind, "field Source must not be specified")
        tmpfs_options(cfg.get("TmpfsOptions"), bool(cfg.get("ReadOnly")))
    else:
        raise MountConfigError(kind, "mount type unknown")


def parse_spec(cfg: dict[str, Any], check_source: bool = True) -> MountPoint:
    """moby parseMountSpec: a HostConfig.Mounts entry (or a parsed `-v`) as a mount point."""
    validate_spec(cfg, check_source)
    kind = cfg["Type"]
    mp = MountPoint(type=kind, destination=posixpath.normpath(cfg["Target"]), rw=not cfg.get("ReadOnly"), spec=cfg)
    if kind == "volume":
        mp.name = cfg.get("Source") or ""
        vo = cfg.get("VolumeOptions") or {}
        mp.driver = (vo.get("DriverConfig") or {}).get("Name") or ""
        mp.copy_data = not vo.get("NoCopy")
    elif kind == "bind":
        mp.source = posixpath.normpath(cfg["Source"])
        mp.propagation = (cfg.get("BindOptions") or {}).get("Propagation") or DEFAULT_PROPAGATION
    return mp


def parse_raw(raw: str, volume_driver: str = "") -> MountPoint:
    """moby ParseMountRaw: `-v [src:]dst[:mode]`."""
    arr = raw.split(":")
    if not arr or not arr[0]:
        raise InvalidParameter(_invalid_spec(raw))
    cfg: dict[str, Any] = {}
    mode = ""
    if len(arr) == 1:
        cfg["Target"] = arr[0]
    elif len(arr) == 2:
        if valid_mode(arr[1]):
            raise InvalidParameter(_invalid_spec(raw))
        cfg["Source"], cfg["Target"] = arr
    elif len(arr) == 3:
        cfg["Source"], cfg["Target"], mode = arr
    else:
        raise InvalidParameter(_invalid_spec(raw))
    if not valid_mode(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    cfg["Type"] = "bind" if cfg.get("Source", "").startswith("/") else "volume"
    if cfg["Type"] == "volume" and not cfg.get("Source"):
        cfg.pop("Source", None)
    if not read_write(mode):
        cfg["ReadOnly"] = True
    if volume_driver and cfg["Type"] == "volume":
        cfg["VolumeOptions"] = {"DriverConfig": {"Name": volume_driver}}
    if _nocopy(mode):
        cfg.setdefault("VolumeOptions", {})["NoCopy"] = True
    if _propagation(mode):
        cfg["BindOptions"] = {"Propagation": _propagation(mode)}
    try:
        mp = parse_spec(cfg, check_source=False)
    except MountConfigError as e:
        raise InvalidParameter(f"{_invalid_spec(raw)}: {e.message}") from None
    mp.mode = mode
    return mp


def parse_volumes_from(spec: str) -> tuple[str, str]:
    if not spec:
        raise InvalidParameter("volumes-from specification cannot be an empty string")
    ref, _, mode = spec.partition(":")
    if not mode:
        return ref, "rw"
    if not valid_mode(mode) or _propagation(mode) or _nocopy(mode):
        raise InvalidParameter(f"invalid mode: {mode}")
    return ref, mode


def validate_host_config(hc: dict[str, Any]) -> None:
    """What dockerd checks before creating anything (verifyContainerSettings)."""
    for b in hc.get("Binds") or []:
        parse_raw(b, hc.get("VolumeDriver") or "")
    for m in hc.get("Mounts") or []:
        if not isinstance(m, dict):
            raise InvalidParameter("invalid mount config")
        validate_spec(m)
    for v in hc.get("VolumesFrom") or []:
        parse_volumes_from(v)
    for dst in hc.get("Tmpfs") or {}:
        _check_target("tmpfs", dst)


# ---- registration (container create) ------------------------------------------------------------


def register(
    cid: str,
    hc: dict[str, Any],
    config: dict[str, Any],
    volumes: VolumeService,
    volumes_from: Callable[[str], dict[str, MountPoint]],
    acquired: list[str],
) -> dict[str, MountPoint]:
    """moby registerMountPoints + the image's Volumes. Volumes are created or referenced for
    `cid`; their names are appended to `acquired` as it goes, so a failure can give them back."""
    mps: dict[str, MountPoint] = {}
    driver = hc.get("VolumeDriver") or ""

    def use_volume(mp: MountPoint, opts: dict[str, str] | None = None, labels: dict[str, str] | None = None) -> None:
        if not mp.name:
            labels = {**(labels or {}), "com.docker.volume.anonymous": ""}
        v = volumes.create(mp.name, mp.driver, opts, labels, ref=cid)
        acquired.append(v.name)
        mp.name, mp.driver, mp.source = v.name, "local", v.mountpoint

    for ref in hc.get("VolumesFrom") or []:
        other, mode = parse_volumes_from(ref)
        for dst, m in volumes_from(other).items():
            cp = MountPoint(
                type=m.type,
                destination=m.destination,
                source=m.source,
                name=m.name,
                driver=m.driver,
                rw=m.rw and read_write(mode),
                propagation=m.propagation,
                spec=dict(m.spec),
            )
            if cp.type == "volume":
                volumes.acquire(cp.name, cid)
                acquired.append(cp.name)
            mps[dst] = cp
    binds: set[str] = set()
    for raw in hc.get("Binds") or []:
        mp = parse_raw(raw, driver)
        if mp.destination in binds or mp.destination in (hc.get("Tmpfs") or {}):
            raise InvalidParameter(f"Duplicate mount point: {mp.destination}")
        if mp.type == "volume":
            use_volume(mp)
            if not mp.mode:
                mp.mode = "z"
        _release_replaced(mps.get(mp.destination), volumes, cid, acquired)
        binds.add(mp.destination)
        mps[mp.destination] = mp
    for cfg in hc.get("Mounts") or []:
        mp = parse_spec(cfg)
        if mp.destination in binds:
            raise InvalidParameter(f"Duplicate mount point: {cfg.get('Target')}")
        if mp.type == "volume":
            vo = cfg.get("VolumeOptions") or {}
            use_volume(mp, (vo.get("DriverConfig") or {}).get("Options"), vo.get("Labels"))
            if not mp.mode:
                mp.mode = "z"
        if mp.type == "bind":
            mp.skip_create = True
        _release_replaced(mps.get(mp.destination), volumes, cid, acquired)
        binds.add(mp.destination)
        mps[mp.destination] = mp
    for spec in config.get("Volumes") or {}:
        dst = posixpath.normpath(spec)
        if dst in mps or dst in (hc.get("Tmpfs") or {}):
            continue
        _check_target("volume", spec)
        mp = MountPoint(type="volume", destination=dst, copy_data=True)
        use_volume(mp, labels={})
        mps[dst] = mp
    return mps


def _release_replaced(old: MountPoint | None, volumes: VolumeService, cid: str, acquired: list[str]) -> None:
    # dockerd's dereferenceIfExists: a later mount on the same destination replaces one from
    # --volumes-from, which then no longer references its volume.
    if old is not None and old.type == "volume" and old.name in acquired:
        acquired.remove(old.name)
        if old.name not in acquired:
            volumes.release(old.name, cid)


def volume_names(mps: dict[str, MountPoint]) -> list[str]:
    return sorted({mp.name for mp in mps.values() if mp.type == "volume" and mp.name})


def release(mps: dict[str, MountPoint], volumes: VolumeService, cid: str, remove_anonymous: bool) -> list[str]:
    """A container goes away: drop its references; with `rm -v`, detach its anonymous volumes
    (those still used by another container stay, as with dockerd). Returns what to purge."""
    gone = []
    for mp in mps.values():
        if mp.type != "volume" or not mp.name:
            continue
        volumes.release(mp.name, cid)
        if remove_anonymous and mp.anonymous:
            with contextlib.suppress(EngineError):
                gone.append(volumes.detach(mp.name, force=True))
    return [g for g in gone if g]


def mount_volumes(mps: dict[str, MountPoint], volumes: VolumeService, cid: str) -> dict[str, str]:
    """Before a start: host paths of the container's volumes (mounting those with options)."""
    sources: dict[str, str] = {}
    try:
        for name in volume_names(mps):
            sources[name] = volumes.mount(name, cid)
    except BaseException:
        unmount_volumes(mps, volumes, cid)
        raise
    return sources


def unmount_volumes(mps: dict[str, MountPoint], volumes: VolumeService, cid: str) -> None:
    for name in volume_names(mps):
        with contextlib.suppress(Exception):
            volumes.unmount(name, cid)


# ---- runtime ------------------------------------------------------------------------------------

_TMPFS_GROUPS = {"exec": "exec", "noexec": "exec", "suid": "suid", "nosuid": "suid", "dev": "dev", "nodev": "dev"}
_TMPFS_GROUPS.update({"ro": "rw", "rw": "rw"})
_KEEP_FLAGS = {"ro", "noexec", "nosuid", "nodev", "strictatime"}
_DROP_WORDS = {"exec", "suid", "dev", "rw", "relatime"} | PROPAGATION_MODES


def merge_tmpfs_options(data: str) -> str:
    """dockerd's tmpfs options: noexec,nosuid,nodev unless the user says otherwise (later wins)."""
    merged: dict[str, str] = {}
    for opt in ["noexec", "nosuid", "nodev", *filter(None, data.split(","))]:
        merged.pop(_TMPFS_GROUPS.get(opt, opt.split("=", 1)[0]), None)
        merged[_TMPFS_GROUPS.get(opt, opt.split("=", 1)[0])] = opt
    words = [o for o in merged.values() if o not in _DROP_WORDS]
    flags = [o for o in words if o in _KEEP_FLAGS]
    return ",".join(flags + [o for o in words if "=" in o])


def runtime_mounts(mps: dict[str, MountPoint], tmpfs: dict[str, str], sources: dict[str, str]) -> list[Mount]:
    """Spec mounts, shallow destinations first (dockerd sorts by path depth). `sources` maps
    volume names to the host path to bind (mounted by the volume service if need be)."""
    out: list[tuple[str, Mount]] = []
    for dst, data in (tmpfs or {}).items():
        out.append(
            (
                posixpath.normpath(dst),
                Mount("tmpfs", posixpath.normpath(dst), "tmpfs", False, merge_tmpfs_options(data)),
            )
        )
    for mp in mps.values():
        if mp.type == "tmpfs":
            data = tmpfs_options(mp.spec.get("TmpfsOptions"), not mp.rw)
            out.append((mp.destination, Mount("tmpfs", mp.destination, "tmpfs", False, merge_tmpfs_options(data))))
        elif mp.type == "volume":
            out.append((mp.destination, Mount("bind", mp.destination, sources.get(mp.name, mp.source), not mp.rw)))
        elif mp.type == "bind":
            if not os.path.exists(mp.source):
                if mp.skip_create:
                    raise MountConfigError("bind", f"bind source path does not exist: {mp.source}")
                os.makedirs(mp.source, mode=0o755, exist_ok=True)
            prop = mp.propagation if mp.propagation != DEFAULT_PROPAGATION else ""
            if prop:
                _check_source_propagation(mp.source, prop)
            out.append((mp.destination, Mount("bind", mp.destination, mp.source, not mp.rw, prop)))
    out.sort(key=lambda item: item[0].rstrip("/").count("/"))
    return [m for _, m in out]


def _check_source_propagation(source: str, prop: str) -> None:
    """dockerd's ensureShared / ensureSharedOrSlave: propagation needs a source mount that can
    propagate at all (on a host whose / is private, nothing can)."""
    path = os.path.realpath(source)
    best, tags = "", ""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left = line.partition(" - ")[0].split()
            mnt = left[4].replace("\\040", " ")
            if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                best, tags = mnt, " ".join(left[6:])
    if prop in ("shared", "rshared") and "shared:" not in tags:
        raise InvalidParameter(f"path {source} is mounted on {best} but it is not a shared mount")
    if prop in ("slave", "rslave") and "shared:" not in tags and "master:" not in tags:
        raise InvalidParameter(f"path {source} is mounted on {best} but it is not a shared or slave mount")


# ---- copy-up ------------------------------------------------------------------------------------


def copy_up(rootfs: str, destination: str, target: str) -> None:
    """dockerd's CopyImagePathContent: the image's content at `destination` goes into the empty
    volume at `target`, with owners, modes, times and xattrs. The image path is resolved inside
    `rootfs` (a symlink to /etc means the image's /etc) and nothing below is followed."""
    root = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            src = linux.openat2(root, destination.strip("/") or ".", os.O_RDONLY | os.O_DIRECTORY)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTDIR):
                return
            raise
    finally:
        os.close(root)
    try:
        dst = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            if os.listdir(dst):
                return
            _copy_dir(src, dst)
            _copy_meta(src, dst)
        finally:
            os.close(dst)
    finally:
        os.close(src)


def _copy_meta(src: int, dst: int) -> None:
    st = os.fstat(src)
    os.fchown(dst, st.st_uid, st.st_gid)
    os.fchmod(dst, stat.S_IMODE(st.st_mode))
    for name in _listxattr(src):
        with contextlib.suppress(OSError):
            os.setxattr(dst, name, os.getxattr(src, name))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))


def _listxattr(fd: int) -> list[str]:
    try:
        return os.listxattr(fd)
    except OSError:
        return []


def _copy_dir(src: int, dst: int) -> None:
    for entry in os.scandir(src):
        name = entry.name
        st = entry.stat(follow_symlinks=False)
        mode = st.st_mode
        if stat.S_ISDIR(mode):
            os.mkdir(name, 0o700, dir_fd=dst)
            s = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dst)
                try:
                    _copy_dir(s, d)
                    _copy_meta(s, d)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISREG(mode):
            s = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=src)
            try:
                d = os.open(
                    name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dst
                )
                try:
                    _copy_bytes(s, d, st.st_size)
                    _copy_meta(s, d)
                finally:
                    os.close(d)
            finally:
                os.close(s)
        elif stat.S_ISLNK(mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            with contextlib.suppress(OSError):
                os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dst, follow_symlinks=False)
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
            os.mknod(name, mode, st.st_rdev, dir_fd=dst)
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dst, follow_symlinks=False)
            os.chmod(name, stat.S_IMODE(mode), dir_fd=dst)


def _copy_bytes(src: int, dst: int, size: int) -> None:
    left = size
    try:
        while left > 0:
            n = os.copy_file_range(src, dst, min(left, 1 << 30))
            if n == 0:
                break
            left -= n
        if left <= 0:
            return
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
            raise
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:  # a short write on a nearly full disk: the next one raises ENOSPC
            view = view[os.write(dst, view) :]
