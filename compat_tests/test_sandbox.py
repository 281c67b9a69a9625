"""Docker's default confinement, checked from inside containers through the CLI: the device
cgroup, seccomp, no-new-privileges, and mount targets that resolve into /proc or /sys."""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator

import pytest

from tests.daemon import Daemon
from tests.images import busybox_rootfs_tar

# 1:11 is /dev/kmsg: a write lands in the host's kernel log when the device cgroup lets it.
KMSG = "mknod /k c 1 11 && echo bocker-sandbox-probe > /k"


def status_field(dm: Daemon, name: str, *args: str) -> str:
    out = dm.out("run", "--rm", *args, "busybox", "grep", f"^{name}:", "/proc/self/status")
    return out.split(":", 1)[1].strip()


# ---- devices -------------------------------------------------------------------------------


def test_kmsg_node_is_not_usable(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "busybox", "sh", "-c", KMSG)
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr + r.stdout


def test_default_devices_work(dm: Daemon) -> None:
    script = (
        "echo x > /dev/null && head -c 4 /dev/zero | wc -c && head -c 4 /dev/urandom | wc -c"
        " && mknod /n c 1 3 && echo y > /n && echo ok"
    )
    out = dm.out("run", "--rm", "busybox", "sh", "-c", script)
    assert out.split() == ["4", "4", "ok"]


def test_block_device_numbers_are_refused(dm: Daemon) -> None:
    # Any block device of the host (here: whatever backs /), made by mknod inside the container.
    st = os.stat("/")
    major, minor = os.major(st.st_dev), os.minor(st.st_dev)
    r = dm.docker("run", "--rm", "busybox", "sh", "-c", f"mknod /b b {major} {minor} && head -c 1 /b")
    assert r.returncode != 0
    assert "Operation not permitted" in r.stderr + r.stdout


def test_device_flag(dm: Daemon) -> None:
    out = dm.out(
        "run", "--rm", "--device", "/dev/zero:/dev/myzero:rw", "busybox", "sh", "-c", "head -c 3 /dev/myzero | wc -c"
    )
    assert out.strip() == "3"
    # Read-only permission (/dev/fuse is not in the default list): opening it read-write is refused.
    script = "exec 3</dev/myfuse && echo read-ok && exec 4<>/dev/myfuse"
    r = dm.docker("run", "--rm", "--device", "/dev/fuse:/dev/myfuse:r", "busybox", "sh", "-c", script)
    assert r.returncode != 0 and r.stdout == "read-ok\n" and "Operation not permitted" in r.stderr
    r = dm.docker("run", "--rm", "--device", "/dev/does-not-exist", "busybox", "true")
    assert r.returncode != 0
    assert 'error gathering device information while adding custom device "/dev/does-not-exist"' in r.stderr


def test_device_cgroup_rule(dm: Daemon) -> None:
    # 10:229 is /dev/fuse: not in the default list, harmless to open.
    script = "mknod /f c 10 229 && exec 3<>/f && echo ok"
    r = dm.docker("run", "--rm", "busybox", "sh", "-c", script)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    out = dm.out("run", "--rm", "--device-cgroup-rule", "c 10:229 rw", "busybox", "sh", "-c", script)
    assert out.strip() == "ok"
    r = dm.docker("run", "--rm", "--device-cgroup-rule", "c 10:229 r", "busybox", "sh", "-c", script)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    r = dm.docker("run", "--rm", "--device-cgroup-rule", "x 1:4 r", "busybox", "true")
    assert r.returncode != 0 and "invalid" in r.stderr.lower()


def test_privileged_allows_all_devices(dm: Daemon) -> None:
    out = dm.out("run", "--rm", "--privileged", "busybox", "sh", "-c", "mknod /f c 10 229 && exec 3<>/f && echo ok")
    assert out.strip() == "ok"
    # The host's device nodes are there, as under dockerd.
    assert dm.out("run", "--rm", "--privileged", "busybox", "ls", "/dev/kmsg").strip() == "/dev/kmsg"


# ---- seccomp -------------------------------------------------------------------------------


def test_seccomp_default_on(dm: Daemon) -> None:
    assert status_field(dm, "Seccomp") == "2"
    # unshare(2) needs CAP_SYS_ADMIN in the profile; the filter answers EPERM before the kernel's check.
    r = dm.docker("run", "--rm", "busybox", "unshare", "-u", "true")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    info = dm.info()
    assert "name=seccomp,profile=builtin" in info["SecurityOptions"]


def test_seccomp_unconfined_and_privileged(dm: Daemon) -> None:
    assert status_field(dm, "Seccomp", "--security-opt", "seccomp=unconfined") == "0"
    assert status_field(dm, "Seccomp", "--privileged") == "0"


def test_seccomp_caps_follow_cap_add(dm: Daemon) -> None:
    # With CAP_SYS_ADMIN the profile allows unshare and the kernel lets it happen.
    out = dm.out("run", "--rm", "--cap-add", "SYS_ADMIN", "busybox", "unshare", "-u", "echo", "ok")
    assert out.strip() == "ok"


def test_seccomp_custom_profile(dm: Daemon, tmp_path: object) -> None:
    profile = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    path = os.path.join(str(tmp_path), "profile.json")
    with open(path, "w") as f:
        json.dump(profile, f)
    r = dm.docker("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "mkdir", "/newdir")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr
    out = dm.out("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "sh", "-c", "touch /f && echo ok")
    assert out.strip() == "ok"
    with open(path, "w") as f:
        f.write("{not json")
    r = dm.docker("run", "--rm", "--security-opt", f"seccomp={path}", "busybox", "true")
    assert r.returncode != 0


# ---- no-new-privileges and --security-opt ------------------------------------------------------


def test_no_new_privileges(dm: Daemon) -> None:
    assert status_field(dm, "NoNewPrivs") == "0"
    assert status_field(dm, "NoNewPrivs", "--security-opt", "no-new-privileges") == "1"
    assert status_field(dm, "NoNewPrivs", "--security-opt", "no-new-privileges=true") == "1"
    assert status_field(dm, "NoNewPrivs", "--security-opt", "no-new-privileges=false") == "0"
    # With no_new_privs the filter goes on after the capabilities, as a non-root user too.
    assert status_field(dm, "Seccomp", "--security-opt", "no-new-privileges", "-u", "1000") == "2"
    assert status_field(dm, "Seccomp", "-u", "1000") == "2"


def test_unknown_security_opt(dm: Daemon) -> None:
    r = dm.docker("run", "--rm", "--security-opt", "bogus=1", "busybox", "true")
    assert r.returncode != 0
    assert 'invalid --security-opt 2: "bogus=1"' in r.stderr
    r = dm.docker("run", "--rm", "--security-opt", "no-new-privileges=maybe", "busybox", "true")
    assert 'invalid --security-opt 2: "no-new-privileges=maybe"' in r.stderr


def test_daemon_no_new_privileges_option(busybox_tar: str) -> None:
    d = Daemon("btrfs" if os.environ.get("BOCKER_TEST_DRIVERS", "btrfs").startswith("btrfs") else "overlay2",
               extra_args=["--no-new-privileges", "--registry-mirror", "http://127.0.0.1:9", "--registry-mirrors-only"])
    try:
        d.start()
        d.out("import", busybox_tar, "busybox:latest")
        assert "name=no-new-privileges" in d.info()["SecurityOptions"]
        assert status_field(d, "NoNewPrivs") == "1"
        assert status_field(d, "NoNewPrivs", "--security-opt", "no-new-privileges=false") == "0"
        d.clean_containers()
        assert d.stop() == 0
    finally:
        d.cleanup()


# ---- mount targets in /proc and /sys -----------------------------------------------------------


@pytest.fixture
def proc_link_image(dm: Daemon, tmp_path: object) -> Iterator[str]:
    """busybox with /etc/hostname a symlink to the host kernel's hostname (through /proc)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(busybox_rootfs_tar())) as src, tarfile.open(fileobj=out, mode="w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isreg() else None)
        link = tarfile.TarInfo("etc/hostname")
        link.type = tarfile.SYMTYPE
        link.linkname = "/proc/sys/kernel/hostname"
        dst.addfile(link)
    path = os.path.join(str(tmp_path), "img.tar")
    with open(path, "wb") as f:
        f.write(out.getvalue())
    dm.out("import", path, "proclink:1")
    yield "proclink:1"
    dm.clean_containers()
    dm.docker("rmi", "-f", "proclink:1")


def test_mount_target_in_proc_is_refused(dm: Daemon, proc_link_image: str) -> None:
    with open("/proc/sys/kernel/hostname") as f:
        before = f.read()
    r = dm.docker("run", "--name", "proclink", "--hostname", "evil", proc_link_image, "cat", "/etc/hostname")
    assert r.returncode != 0
    assert "cannot be mounted because it is inside /proc" in r.stderr
    r = dm.docker("start", "-a", "proclink")
    assert r.returncode != 0
    assert "cannot be mounted because it is inside /proc" in r.stderr
    with open("/proc/sys/kernel/hostname") as f:
        assert f.read() == before


def test_bind_target_in_sys_is_refused(dm: Daemon, tmp_path: object) -> None:
    src = os.path.join(str(tmp_path), "f")
    with open(src, "w") as f:
        f.write("x\n")
    r = dm.docker("run", "--rm", "-v", f"{src}:/sys/kernel/notes", "busybox", "true")
    assert r.returncode != 0
    assert "cannot be mounted because it is inside /sys" in r.stderr
