"""The engines a benchmark compares: our bockerd, and dockerd when Debian's docker.io is there.

Both run on private sockets and data roots, so a benchmark never touches a system daemon.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time

from tests.daemon import DOCKER, Daemon


class Engine:
    name = ""
    env: dict[str, str]

    def docker(self, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([DOCKER, *args], env=self.env, capture_output=True, text=True, input=input)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: docker {' '.join(args)}: {r.stderr}")
        return r

    def pids(self) -> list[int]:
        """Every process of the engine itself (not the containers' own processes)."""
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Bocker(Engine):
    name = "bocker"

    def __init__(self, driver: str = "btrfs") -> None:
        self.d = Daemon(driver)
        self.d.start()
        self.env = self.d.env

    def pids(self) -> list[int]:
        assert self.d.proc is not None
        pids = [self.d.proc.pid]
        try:
            with open(os.path.join(self.d.exec_root, "supervisor", "supervisor.pid")) as f:
                pids.append(int(f.read()))
        except OSError:
            pass
        return pids

    def stop(self) -> None:
        self.d.cleanup()


class Dockerd(Engine):
    name = "dockerd"

    def __init__(self, extra: list[str] | None = None) -> None:
        self.base = tempfile.mkdtemp(prefix="bench-dockerd-", dir="/var/tmp")
        self.sock = os.path.join(self.base, "docker.sock")
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{self.sock}",
                        DOCKER_CONFIG=os.path.join(self.base, "config"))
        self.log = open(os.path.join(self.base, "dockerd.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            ["dockerd", "-H", f"unix://{self.sock}", "--data-root", os.path.join(self.base, "data"),
             "--exec-root", os.path.join(self.base, "exec"), "--pidfile", os.path.join(self.base, "pid"),
             *(extra or [])],
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.docker("version", check=False).returncode == 0:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("dockerd did not start")

    @staticmethod
    def available() -> bool:
        return shutil.which("dockerd") is not None and shutil.which("containerd") is not None

    def pids(self) -> list[int]:
        pids = [self.proc.pid]
        # containerd and its shims are children (and grandchildren) of this dockerd.
        out = subprocess.run(["ps", "-eo", "pid,ppid,comm"], capture_output=True, text=True).stdout
        children: dict[int, list[int]] = {}
        comm: dict[int, str] = {}
        for line in out.splitlines()[1:]:
            pid, ppid, name = line.split(None, 2)
            children.setdefault(int(ppid), []).append(int(pid))
            comm[int(pid)] = name
        todo = [self.proc.pid]
        while todo:
            for child in children.get(todo.pop(), []):
                if comm.get(child, "").startswith(("containerd", "docker-")):
                    pids.append(child)
                    todo.append(child)
        # Shims re-parent to init (or a subreaper) once started: find them by their argument.
        for line in subprocess.run(["pgrep", "-f", f"containerd-shim.*{self.base}"], capture_output=True,
                                   text=True).stdout.split():
            if int(line) not in pids:
                pids.append(int(line))
        return pids

    def stop(self) -> None:
        ids = self.docker("ps", "-aq", check=False).stdout.split()
        if ids:
            self.docker("rm", "-f", *ids, check=False)
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        for sub in ("data", "exec"):  # exec: dockerd's netns/default bind mount
            subprocess.run(["umount", "-R", os.path.join(self.base, sub)], capture_output=True)
        subprocess.run(["ip", "link", "del", "docker0"], capture_output=True)  # dockerd leaves it
        shutil.rmtree(self.base, ignore_errors=True)


def memory_kib(pids: list[int]) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over pids; PSS shares pages fairly between processes."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
        except OSError:
            continue
    return rss, pss
