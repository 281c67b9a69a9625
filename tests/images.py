"""Test images built from Debian's busybox-static: no network, no Docker Hub."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
import time

BUSYBOX = "/bin/busybox"

PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
)
GROUP = "root:x:0:\ndaemon:x:1:\ntty:x:5:\nstaff:x:50:app\nnogroup:x:65534:\napp:x:1000:\n"


def applets() -> list[str]:
    out = subprocess.run([BUSYBOX, "--list-full"], check=True, capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def busybox_rootfs_tar(extra: dict[str, bytes] | None = None) -> bytes:
    """A minimal rootfs: busybox, its applet links, /etc/passwd+group, /tmp 1777, /var/run -> /run."""
    buf = io.BytesIO()
    mtime = int(time.time())

    def add(name: str, kind: bytes = tarfile.DIRTYPE, mode: int = 0o755, data: bytes = b"", link: str = "") -> None:
        ti = tarfile.TarInfo(name)
        ti.type = kind
        ti.mode = mode
        ti.mtime = mtime
        ti.linkname = link
        ti.size = len(data) if kind == tarfile.REGTYPE else 0
        tf.addfile(ti, io.BytesIO(data) if kind == tarfile.REGTYPE else None)

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in (
            "bin",
            "sbin",
            "usr",
            "usr/bin",
            "usr/sbin",
            "etc",
            "root",
            "home",
            "home/app",
            "var",
            "run",
            "proc",
            "sys",
            "dev",
        ):
            add(d + "/", mode=0o700 if d == "root" else 0o755)
        add("tmp/", mode=0o1777)
        with open(BUSYBOX, "rb") as f:
            add("bin/busybox", tarfile.REGTYPE, 0o755, f.read())
        for path in applets():
            rel = path.lstrip("/")
            if rel == "bin/busybox":
                continue
            if rel.startswith(("linuxrc",)):
                continue
            add(rel, tarfile.SYMTYPE, 0o777, link="/bin/busybox")
        add("var/run", tarfile.SYMTYPE, 0o777, link="/run")
        add("etc/passwd", tarfile.REGTYPE, 0o644, PASSWD.encode())
        add("etc/group", tarfile.REGTYPE, 0o644, GROUP.encode())
        for name, data in (extra or {}).items():
            add(name, tarfile.REGTYPE, 0o755 if name.endswith(".sh") else 0o644, data)
    return buf.getvalue()


def write_busybox_tar(path: str) -> str:
    if not os.path.exists(path):
        tmp = path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(busybox_rootfs_tar())
        os.replace(tmp, path)
    return path


def tar_of(entries: list[tuple[str, bytes, bytes]]) -> bytes:
    """(name, type, data) entries as they come, without tarfile's own checks (hostile archives)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, kind, data in entries:
            ti = tarfile.TarInfo(name)
            ti.type = kind
            if kind in (tarfile.SYMTYPE, tarfile.LNKTYPE):
                ti.linkname = data.decode()
                tf.addfile(ti)
            elif kind == tarfile.DIRTYPE:
                tf.addfile(ti)
            else:
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()
