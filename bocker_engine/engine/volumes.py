"""Volumes: the `local` driver, its store and who references what.

<data-root>/volumes/<name>/volume.json   name, labels, driver options, creation time (atomic writes)
<data-root>/volumes/<name>/_data         the data (a btrfs subvolume when the data root is on btrfs)

A volume is created whole or not at all: it is assembled in a temporary directory beside the
store and renamed into place; removal renames it out of the way first. Leftovers of either
(a crash in between) are swept on load, so the store only ever holds complete volumes.

References are dockerd's: every container that has a volume among its mount points holds a
reference (running or not), and a referenced volume cannot be removed or pruned. Volumes with
mount options (`--opt type=tmpfs --opt device=tmpfs --opt o=size=100m`, `type=none,o=bind`)
are mounted when the first running container needs them and unmounted after the last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bocker_engine import linux
from bocker_engine.engine import filters as flt
from bocker_engine.engine.store import read_json, write_json
from bocker_engine.errors import Conflict, InvalidParameter, NotFound, System
from bocker_engine.storage.driver import fs_type, is_mountpoint

log = logging.getLogger(__name__)

DRIVER = "local"
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
RESTRICTED_NAME_CHARS = "[a-zA-Z0-9][a-zA-Z0-9_.-]"
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_META = "volume.json"
_TMP_PREFIX = ".tmp-"
_RM_PREFIX = ".rm-"

# moby volume/local: the options the local driver knows, and which ones need which.
_VALID_OPTS = {"type", "o", "device", "size"}
_MANDATORY_OPTS = {"device": ["type"], "type": ["device"], "o": ["device", "type"]}

# mount(8) option words that are flags (set, or cleared when the value is False).
_MS_SYNCHRONOUS, _MS_DIRSYNC, _MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 16, 128, 1024, 2048, 1 << 21
_FLAGS: dict[str, tuple[int, bool]] = {
    "ro": (linux.MS_RDONLY, True),
    "rw": (linux.MS_RDONLY, False),
    "nosuid": (linux.MS_NOSUID, True),
    "suid": (linux.MS_NOSUID, False),
    "nodev": (linux.MS_NODEV, True),
    "dev": (linux.MS_NODEV, False),
    "noexec": (linux.MS_NOEXEC, True),
    "exec": (linux.MS_NOEXEC, False),
    "sync": (_MS_SYNCHRONOUS, True),
    "async": (_MS_SYNCHRONOUS, False),
    "dirsync": (_MS_DIRSYNC, True),
    "noatime": (_MS_NOATIME, True),
    "atime": (_MS_NOATIME, False),
    "nodiratime": (_MS_NODIRATIME, True),
    "diratime": (_MS_NODIRATIME, False),
    "relatime": (_MS_RELATIME, True),
    "norelatime": (_MS_RELATIME, False),
    "strictatime": (linux.MS_STRICTATIME, True),
    "bind": (linux.MS_BIND, True),
    "rbind": (linux.MS_BIND | linux.MS_REC, True),
    "defaults": (0, True),
}


def validate_name(name: str) -> None:
    """moby volume/local Root.validateName, wrapped like its store does ("create <name>: ...")."""
    if len(name) == 1:
        raise InvalidParameter(
            f"create {name}: volume name is too short, names should be at least two alphanumeric characters"
        )
    if not _NAME_RE.match(name):
        raise InvalidParameter(
            f'create {name}: "{name}" includes invalid characters for a local volume name, only '
            f'"{RESTRICTED_NAME_CHARS}" are allowed. If you intended to pass a host directory, use absolute path'
        )


def validate_opts(name: str, opts: dict[str, str]) -> None:
    for opt in sorted(opts):
        if opt not in _VALID_OPTS:
            raise InvalidParameter(f'create {name}: invalid option: "{opt}"')
    if "size" in opts:
        raise InvalidParameter(f"create {name}: quota size requested but no quota support")
    for opt, required in _MANDATORY_OPTS.items():
        if opt in opts:
            for req in required:
                if req not in opts:
                    raise InvalidParameter(f'create {name}: missing required option: "{req}"')


def mount_options(o: str) -> tuple[int, str | None]:
    """`o=size=100m,uid=1000,ro` -> (MS_RDONLY, "size=100m,uid=1000"), as moby/sys/mount parses it."""
    flags, data = 0, []
    for opt in filter(None, o.split(",")):
        if opt in _FLAGS:
            bit, on = _FLAGS[opt]
            flags = flags | bit if on else flags & ~bit
        else:
            data.append(opt)
    return flags, ",".join(data) or None


@dataclass
class Volume:
    name: str
    path: str
    created_at: str
    labels: dict[str, str] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)

    @property
    def mountpoint(self) -> str:
        return os.path.join(self.path, "_data")

    @property
    def anonymous(self) -> bool:
        return ANONYMOUS_LABEL in self.labels

    @property
    def needs_mount(self) -> bool:
        return bool(self.options.get("device") or self.options.get("type"))

    def to_json(self) -> dict[str, Any]:
        return {
            "CreatedAt": self.created_at,
            "Driver": DRIVER,
            "Labels": dict(self.labels),
            "Mountpoint": self.mountpoint,
            "Name": self.name,
            # dockerd sends null when there are none; the v1.44 schema requires an object.
            "Options": dict(self.options),
            "Scope": "local",
        }

    def to_disk(self) -> dict[str, Any]:
        return {"Name": self.name, "CreatedAt": self.created_at, "Labels": self.labels, "Options": self.options}


class VolumeService:
    def __init__(self, root: str) -> None:
        self.root = root
        self.volumes: dict[str, Volume] = {}
        # name -> container IDs referencing it (dockerd's reference counting).
        self.refs: dict[str, set[str]] = {}
        # name -> containers that have it mounted right now (for volumes with mount options).
        self.active: dict[str, set[str]] = {}
        self.on_event: Callable[[str, str, dict[str, str]], None] = lambda *_: None
        self._btrfs = False

    # ---- store ----------------------------------------------------------------------------

    def load(self) -> None:
        os.makedirs(self.root, mode=0o701, exist_ok=True)
        self._btrfs = fs_type(self.root) == "btrfs"
        for entry in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, entry)
            if entry.startswith((_TMP_PREFIX, _RM_PREFIX)):
                # Half-made or half-removed by a crash: never a volume anyone saw whole.
                self._purge(path)
                continue
            if not os.path.isdir(path):
                continue
            try:
                meta = read_json(os.path.join(path, _META))
            except (OSError, ValueError):
                if not os.path.isdir(os.path.join(path, "_data")):
                    continue
                # Data without metadata (a volume dir copied in by hand): keep it, plainly.
                meta = {"Name": entry, "CreatedAt": _rfc3339(os.stat(path).st_ctime)}
            v = Volume(
                name=entry,
                path=path,
                created_at=meta.get("CreatedAt") or _rfc3339(os.stat(path).st_ctime),
                labels=dict(meta.get("Labels") or {}),
                options=dict(meta.get("Options") or {}),
            )
            self.volumes[v.name] = v
            if v.needs_mount and is_mountpoint(v.mountpoint):
                # Mounted by a previous daemon; kept only if a restored container still uses it.
                self.active.setdefault(v.name, set())

    def get(self, name: str) -> Volume:
        v = self.volumes.get(name)
        if v is None:
            raise NotFound(f"get {name}: no such volume")
        return v

    def create(
        self,
        name: str = "",
        driver: str = "",
        opts: dict[str, str] | None = None,
        labels: dict[str, str] | None = None,
        ref: str = "",
    ) -> Volume:
        driver = driver or DRIVER
        anonymous = not name
        name = name or secrets.token_hex(32)
        if driver != DRIVER:
            raise NotFound(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')
        existing = self.volumes.get(name)
        if existing is not None:
            # dockerd hands back the existing volume (its labels and options stay as they were).
            if ref:
                self.refs.setdefault(name, set()).add(ref)
            return existing
        validate_name(name)
        opts = {str(k): str(v) for k, v in (opts or {}).items()}
        validate_opts(name, opts)
        labels = {str(k): str(v) for k, v in (labels or {}).items()}
        if anonymous:
            labels.setdefault(ANONYMOUS_LABEL, "")
        v = Volume(
            name=name, path=os.path.join(self.root, name), created_at=_rfc3339(time.time()), labels=labels, options=opts
        )
        tmp = os.path.join(self.root, f"{_TMP_PREFIX}{name}-{secrets.token_hex(4)}")
        try:
            os.mkdir(tmp, 0o701)
            if self._btrfs:
                from bocker_engine.storage.btrfs import create_subvolume

                create_subvolume(tmp, "_data")
                os.chmod(os.path.join(tmp, "_data"), 0o755)
            else:
                os.mkdir(os.path.join(tmp, "_data"), 0o755)
            write_json(os.path.join(tmp, _META), v.to_disk())
            os.rename(tmp, v.path)
        except OSError as e:
            self._purge(tmp)
            raise System(f"create {name}: {e.strerror or e}") from None
        self.volumes[name] = v
        if ref:
            self.refs.setdefault(name, set()).add(ref)
        self.on_event("create", name, {"driver": DRIVER})
        return v

    def remove(self, name: str, force: bool = False) -> None:
        """Remove now (the data goes in a thread: `detach` then `purge`)."""
        gone = self.detach(name, force)
        if gone:
            self.purge(gone)

    def detach(self, name: str, force: bool = False) -> str:
        """Take an unused volume out of the store (checked and renamed away on the event loop,
        so no container can take a reference in between); returns what `purge` must delete."""
        v = self.volumes.get(name)
        if v is None:
            if force:
                return ""
            raise NotFound(f"get {name}: no such volume")
        users = self.refs.get(name)
        if users:
            raise Conflict(f"remove {name}: volume is in use - [{', '.join(sorted(users))}]")
        self._unmount_now(v)
        gone = os.path.join(self.root, f"{_RM_PREFIX}{name}-{secrets.token_hex(4)}")
        try:
            os.rename(v.path, gone)
        except OSError as e:
            raise System(f"remove {name}: {e.strerror or e}") from None
        del self.volumes[name]
        self.refs.pop(name, None)
        self.active.pop(name, None)
        self.on_event("destroy", name, {"driver": DRIVER})
        return gone

    def purge(self, gone: str) -> int:
        """Delete a detached volume's data; returns the bytes it used."""
        size = du(os.path.join(gone, "_data"))
        self._purge(gone)
        return size

    def _purge(self, path: str) -> None:
        data = os.path.join(path, "_data")
        with contextlib.suppress(OSError):
            if is_mountpoint(data):
                linux.umount(data, linux.MNT_DETACH)
        if self._btrfs and os.path.isdir(data) and os.lstat(data).st_ino == 256:
            from bocker_engine.storage.btrfs import destroy_subvolume

            with contextlib.suppress(OSError):
                destroy_subvolume(path, "_data")
        shutil.rmtree(path, ignore_errors=True)

    # ---- references -----------------------------------------------------------------------

    def acquire(self, name: str, ref: str) -> Volume:
        v = self.get(name)
        self.refs.setdefault(name, set()).add(ref)
        return v

    def release(self, name: str, ref: str) -> None:
        users = self.refs.get(name)
        if users is not None:
            users.discard(ref)
            if not users:
                del self.refs[name]

    def in_use(self, name: str) -> bool:
        return bool(self.refs.get(name))

    async def usage(self) -> list[dict[str, Any]]:
        """`docker system df`'s volumes: each with UsageData (bytes on disk, containers using it)."""
        vols = sorted(self.volumes.values(), key=lambda v: v.name)
        sizes = await asyncio.gather(*(asyncio.to_thread(du, v.mountpoint) for v in vols))
        return [
            {**v.to_json(), "UsageData": {"Size": size, "RefCount": len(self.refs.get(v.name, ()))}}
            for v, size in zip(vols, sizes, strict=True)
        ]

    # ---- mounting (volumes with driver options) -------------------------------------------

    def mount(self, name: str, ref: str) -> str:
        """The host path to bind into a container; mounts the volume for its first user."""
        v = self.get(name)
        if not v.needs_mount:
            return v.mountpoint
        users = self.active.setdefault(name, set())
        if not users and not is_mountpoint(v.mountpoint):
            o = v.options.get("o", "")
            flags, data = mount_options(o)
            fstype = v.options.get("type") or None
            try:
                linux.mount(v.options.get("device") or None, v.mountpoint, fstype, flags & ~linux.MS_RDONLY, data)
                if flags & linux.MS_RDONLY:
                    linux.mount(None, v.mountpoint, None, linux.MS_REMOUNT | linux.MS_BIND | linux.MS_RDONLY)
            except OSError as e:
                if not users:
                    del self.active[name]
                raise System(
                    f"error while mounting volume '{v.mountpoint}': failed to mount local volume: "
                    f"mount {v.options.get('device', '')}:{v.mountpoint}, data: {data or ''}: "
                    f"{(e.strerror or str(e)).lower()}"
                ) from None
        users.add(ref)
        return v.mountpoint

    def unmount(self, name: str, ref: str) -> None:
        users = self.active.get(name)
        if users is None:
            return
        users.discard(ref)
        if not users:
            v = self.volumes.get(name)
            if v is not None:
                self._unmount_now(v)
            self.active.pop(name, None)

    def _unmount_now(self, v: Volume) -> None:
        if v.needs_mount:
            with contextlib.suppress(OSError):
                while is_mountpoint(v.mountpoint):
                    linux.umount(v.mountpoint, linux.MNT_DETACH)

    def sweep_mounts(self) -> None:
        """After restore: volumes mounted by an earlier daemon that no running container uses."""
        for name, users in list(self.active.items()):
            if not users:
                self.unmount(name, "")

    def shutdown(self) -> None:
        for name in list(self.active):
            v = self.volumes.get(name)
            if v is not None:
                self._unmount_now(v)
        self.active.clear()

    # ---- list, prune ----------------------------------------------------------------------

    def list_volumes(self, filters: flt.Filters) -> list[Volume]:
        flt.check(filters, {"dangling", "driver", "label", "name"})
        dangling = flt.bool_filter(filters, "dangling")
        out = []
        for v in sorted(self.volumes.values(), key=lambda v: v.name):
            if dangling is not None and dangling == self.in_use(v.name):
                continue
            if filters.get("driver") and DRIVER not in filters["driver"]:
                continue
            if filters.get("name") and not any(n in v.name for n in filters["name"]):
                continue
            if not flt.match_labels(filters.get("label"), v.labels):
                continue
            out.append(v)
        return out

    def prune(self, filters: flt.Filters) -> tuple[list[str], list[str]]:
        """Detach every unused volume matching: (names, paths to purge)."""
        flt.check(filters, {"label", "label!", "all"})
        every = flt.bool_filter(filters, "all") or False
        deleted, gone = [], []
        for v in list(self.volumes.values()):
            if self.in_use(v.name) or (not every and not v.anonymous):
                continue
            if not flt.match_labels(filters.get("label"), v.labels):
                continue
            if any(_has_label(v.labels, f) for f in filters.get("label!", [])):
                continue
            try:
                gone.append(self.detach(v.name))
            except (Conflict, System):
                continue
            deleted.append(v.name)
        return deleted, gone


def _has_label(labels: dict[str, str], f: str) -> bool:
    key, sep, value = f.partition("=")
    return key in labels and (not sep or labels[key] == value)


def du(path: str) -> int:
    """Bytes a directory tree uses on disk, counting hard links once, following no symlink."""
    total, seen = 0, set()
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_blocks * 512
    return total


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
