"""Container runtime benchmark (issue 2): the stock CLI against bockerd, and dockerd if present.

    .venv/bin/python -m bench.runtime [--runs 15] [--driver btrfs]

Times are wall-clock medians of whole `docker` commands (the CLI's own start-up included, the
same for both engines). Both engines run at once; timed commands alternate between them sample
by sample, and the steps that load the machine run on one, then the other. Memory is the
engine's own processes (daemon + supervisor for us; dockerd + containerd + shims for Docker),
idle and with 50 running containers, and the daemon process alone (bockerd / dockerd) idle.
"""

from __future__ import annotations

import argparse
import fcntl
import http.client
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.engines import DOCKER, Bocker, Dockerd, Engine, memory_kib  # noqa: E402
from tests.images import write_busybox_tar  # noqa: E402

Result = dict[str, float]


Engines = list[Engine]
Results = dict[str, Result]


def timed(fn: Callable[[], object], runs: int, setup: Callable[[], object] | None = None) -> float:
    samples = []
    for _ in range(runs):
        if setup is not None:
            setup()
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def paired(
    engines: Engines, runs: int, fn: Callable[[Engine], object], setup: Callable[[Engine], object] | None = None
) -> dict[str, float]:
    """Median time of `fn` on each engine, the samples taken in turn (one here, one there, the
    order alternating): a few seconds of something else on the machine hit both sides alike."""
    samples: dict[str, list[float]] = {e.name: [] for e in engines}
    for i in range(runs):
        for e in engines if i % 2 == 0 else engines[::-1]:
            if setup is not None:
                setup(e)
            t = time.perf_counter()
            fn(e)
            samples[e.name].append(time.perf_counter() - t)
    return {name: statistics.median(s) for name, s in samples.items()}


def rows(**columns: dict[str, float]) -> Results:
    """{"row": {engine: value}} -> {engine: {"row": value}}."""
    out: Results = {}
    for row, values in columns.items():
        for name, v in values.items():
            out.setdefault(name, {})[row] = v
    return out


class _UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost")
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self.path)


def ping_keepalive(engines: Engines, runs: int, requests: int = 200) -> Results:
    """Median time of one `GET /_ping` on a kept-alive connection: the floor every API call
    pays. In blocks of 20, engine after engine."""
    conns = {e.name: _UnixHTTP(e.env["DOCKER_HOST"].removeprefix("unix://")) for e in engines}
    samples: dict[str, list[float]] = {name: [] for name in conns}
    try:
        for block in range(requests // 20):
            for name in conns if block % 2 == 0 else list(conns)[::-1]:
                conn = conns[name]
                for _ in range(20):
                    t = time.perf_counter()
                    conn.request("GET", "/_ping")
                    r = conn.getresponse()
                    r.read()
                    samples[name].append(time.perf_counter() - t)
                    assert r.status == 200
    finally:
        for conn in conns.values():
            conn.close()
    return rows(ping={name: statistics.median(s) for name, s in samples.items()})


def make_tree(where: str, mib: int = 50) -> str:
    """A directory of `mib` MiB: 1 MiB files in a few subdirectories, and some small ones."""
    top = os.path.join(where, "tree")
    for i in range(mib):
        d = os.path.join(top, f"d{i % 5}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"f{i}"), "wb") as f:
            f.write(os.urandom(1 << 20))
    for i in range(200):
        with open(os.path.join(top, f"small{i}"), "w") as f:
            f.write("x" * i)
    return top


def bench_cp(engines: Engines, runs: int) -> Results:
    """`docker cp` of a 50 MiB directory into a running container, then out of it. The host
    side is on tmpfs: on disk, the CLI's own writes (and freeing the last run's copy) varied
    by 2x from run to run and drowned the engines' part."""
    work = tempfile.mkdtemp(prefix="bench-cp-", dir="/dev/shm" if os.path.isdir("/dev/shm") else "/var/tmp")
    try:
        tree = make_tree(work)
        for e in engines:
            e.docker("run", "-d", "--name", "cpbox", "busybox", "sleep", "1000")
        cp_in = paired(engines, runs, lambda e: e.docker("cp", tree, "cpbox:/tmp/"))
        cp_out = paired(
            engines,
            runs,
            lambda e: e.docker("cp", "cpbox:/tmp/tree", os.path.join(work, e.name)),
            setup=lambda e: shutil.rmtree(os.path.join(work, e.name), ignore_errors=True),
        )
        for e in engines:
            e.docker("rm", "-f", "cpbox")
        return rows(cp_in_50m=cp_in, cp_out_50m=cp_out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


BENCH_DOCKERFILE = "FROM busybox\nRUN echo one > /one\nCOPY f /f\nENV X=1\n"


def bench_commit_build(engines: Engines, runs: int) -> Results:
    """`docker commit` of a running container with a 1 MiB change; a 3-step build all cached,
    then with --no-cache (classic builder on both engines: DOCKER_BUILDKIT=0 and no buildx)."""
    cids = {
        e.name: e.docker(
            "run", "-d", "busybox", "sh", "-c", "head -c 1048576 /dev/urandom > /big; sleep 1000"
        ).stdout.strip()
        for e in engines
    }
    time.sleep(1)
    commit = paired(engines, runs, lambda e: e.docker("commit", cids[e.name], "bench-commit:1"))
    for e in engines:
        e.docker("rm", "-f", cids[e.name])
    work = tempfile.mkdtemp(prefix="bench-build-", dir="/var/tmp")
    try:
        with open(os.path.join(work, "Dockerfile"), "w") as f:
            f.write(BENCH_DOCKERFILE)
        with open(os.path.join(work, "f"), "w") as f:
            f.write("data\n")
        for e in engines:
            e.docker("build", "-t", "bench-build:1", work)
        cached = paired(engines, runs, lambda e: e.docker("build", "-t", "bench-build:1", work))
        uncached = paired(engines, min(runs, 5), lambda e: e.docker("build", "--no-cache", "-t", "bench-build:1", work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for e in engines:
        e.docker("rmi", "bench-commit:1", "bench-build:1")
        e.docker("image", "prune", "-f")
    return rows(commit_1m=commit, build_cached=cached, build_nocache=uncached)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of these processes, from /proc/<pid>/stat."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def stats_stream_cpu(e: Engine, seconds: float = 10.0) -> float:
    """The engine's CPU (share of one core) while `docker stats` streams every running container."""
    proc = subprocess.Popen([DOCKER, "stats"], env=e.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # every stream set up and primed
        pids = e.pids()
        before, t = cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        return (cpu_seconds(pids) - before) / (time.monotonic() - t)
    finally:
        proc.kill()
        proc.wait()


_LINE = "x" * 99  # 100 bytes a line with its newline
_ROTATE = ["--log-opt", "max-size=10m", "--log-opt", "max-file=4"]


def bench_logs_tail(engines: Engines, runs: int) -> Results:
    """`docker logs --tail 100` over 3 rotated json-file files of 10 MB."""
    for e in engines:
        e.docker("run", "--name", "rotated", *_ROTATE, "busybox", "sh", "-c", f"yes {_LINE} | head -c 26000000")
    tail = paired(engines, runs, lambda e: e.docker("logs", "--tail", "100", "rotated"))
    for e in engines:
        e.docker("rm", "rotated")
    return rows(logs_tail_rotated=tail)


def log_cpu(e: Engine, runs: int, seconds: float = 10.0) -> Result:
    """The engine's CPU while 10 containers each write ~10 MB/s of log lines (rotated at 10m)."""
    # ~1 MB every 0.1 s: 10 MB/s when the machine keeps up (2 cores also run the writers).
    writer = f"while true; do yes {_LINE} | head -c 1000000; sleep 0.1; done"
    ids = [e.docker("run", "-d", *_ROTATE, "busybox", "sh", "-c", writer).stdout.strip() for _ in range(10)]
    try:
        time.sleep(2)
        pids = e.pids()
        before, t = cpu_seconds(pids), time.monotonic()
        time.sleep(seconds)
        return {"log_cpu_10x10": (cpu_seconds(pids) - before) / (time.monotonic() - t)}
    finally:
        e.docker("rm", "-f", *ids)


def proxy_throughput(e: Engine, mib: int = 1024) -> float:
    """Bytes per second from the host into a container through a published port on 127.0.0.1
    (the userland proxy: ours in the daemon, dockerd's docker-proxy), with a real TCP client."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    e.docker(
        "run", "-d", "--name", "sink", "-p", f"127.0.0.1:{port}:80", "busybox", "sh", "-c", "nc -l -p 80 > /dev/null"
    )
    chunk = b"x" * (1 << 20)
    deadline = time.monotonic() + 20
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    try:
        time.sleep(0.5)  # nc listening inside, behind the proxy
        t = time.perf_counter()
        for _ in range(mib):
            conn.sendall(chunk)
        conn.shutdown(socket.SHUT_WR)
        conn.recv(1)  # until the far side has everything and closes
        elapsed = time.perf_counter() - t
    finally:
        conn.close()
        e.docker("rm", "-f", "sink", check=False)
    return mib * (1 << 20) / elapsed


def _run_rm(engines: Engines, runs: int) -> Results:
    return rows(run_rm=paired(engines, runs, lambda e: e.docker("run", "--rm", "busybox", "true")))


def _create(engines: Engines, runs: int) -> Results:
    res = rows(create=paired(engines, runs, lambda e: e.docker("create", "busybox", "true")))
    for e in engines:
        e.docker("container", "prune", "-f")
    return res


def _start_a(engines: Engines, runs: int) -> Results:
    made: dict[str, str] = {}

    def create(e: Engine) -> None:
        made[e.name] = e.docker("create", "busybox", "true").stdout.strip()

    res = rows(start_a=paired(engines, runs, lambda e: e.docker("start", "-a", made[e.name]), setup=create))
    for e in engines:
        e.docker("container", "prune", "-f")
    return res


def _ps_a(engines: Engines, runs: int) -> Results:
    for e in engines:
        for _ in range(50):
            e.docker("create", "busybox", "true")
    res = rows(ps_a_50=paired(engines, runs, lambda e: e.docker("ps", "-a")))
    for e in engines:
        e.docker("container", "prune", "-f")
    return res


def _logs(engines: Engines, runs: int) -> Results:
    for e in engines:
        e.docker("run", "--name", "loggy", "busybox", "seq", "1", "10000")
    res = rows(logs_10k=paired(engines, runs, lambda e: e.docker("logs", "loggy")))
    for e in engines:
        e.docker("rm", "loggy")
    return res


def _exec(engines: Engines, runs: int) -> Results:
    for e in engines:
        e.docker("run", "-d", "--name", "execbox", "busybox", "sleep", "1000")
        e.docker("exec", "execbox", "true")  # warm: the container's spec is built on the first exec
    res = rows(exec_true=paired(engines, runs, lambda e: e.docker("exec", "execbox", "true")))
    for e in engines:
        e.docker("rm", "-f", "execbox")
    return res


def _fifty(e: Engine, runs: int) -> Result:
    res: Result = {}
    t = time.perf_counter()
    with ThreadPoolExecutor(50) as pool:
        list(pool.map(lambda _: e.docker("run", "-d", "busybox", "sleep", "1000"), range(50)))
    res["run_d_50_parallel"] = time.perf_counter() - t
    time.sleep(2)
    res["mem_50_rss"], res["mem_50_pss"] = memory_kib(e.pids())
    res["stats_50"] = timed(lambda: e.docker("stats", "--no-stream"), min(runs, 5))
    res["stats_cpu_50"] = stats_stream_cpu(e)
    ids = e.docker("ps", "-q").stdout.split()
    e.docker("rm", "-f", *ids)
    return res


def one_by_one(step: Callable[[Engine, int], Result]) -> Callable[[Engines, int], Results]:
    """A step that cannot be interleaved (a single long measurement, load on the machine): on
    one engine, then the other, in alternating order from one bench step to the next."""

    def run(engines: Engines, runs: int) -> Results:
        return {e.name: step(e, runs) for e in engines}

    return run


def _proxy(e: Engine, runs: int) -> Result:
    return {"proxy_1g": proxy_throughput(e)}


# Groups of rows in the order they run; `--only` picks groups by any of their row names.
STEPS: list[tuple[tuple[str, ...], Callable[[Engines, int], Results]]] = [
    (("ping",), ping_keepalive),
    (("run_rm",), _run_rm),
    (("create",), _create),
    (("start_a",), _start_a),
    (("ps_a_50",), _ps_a),
    (("logs_10k",), _logs),
    (("logs_tail_rotated",), bench_logs_tail),
    (("log_cpu_10x10",), one_by_one(log_cpu)),
    (("cp_in_50m", "cp_out_50m"), bench_cp),
    (("exec_true",), _exec),
    (("commit_1m", "build_cached", "build_nocache"), bench_commit_build),
    (("proxy_1g",), one_by_one(_proxy)),
    (("run_d_50_parallel", "mem_50_rss", "mem_50_pss", "stats_50", "stats_cpu_50"), one_by_one(_fifty)),
]


def bench_engines(engines: Engines, tar: str, runs: int, only: set[str] | None = None) -> Results:
    """Both engines up at once. Timed commands alternate between them sample by sample; the
    steps that load the machine run on one, then the other, the order alternating."""
    results: Results = {e.name: {} for e in engines}
    for e in engines:
        e.docker("import", tar, "busybox:latest")
        e.docker("run", "--rm", "busybox", "true")  # warm caches
    time.sleep(1)
    if only is None:
        for e in engines:
            res = results[e.name]
            res["mem_idle_rss"], res["mem_idle_pss"] = memory_kib(e.pids())
            res["mem_daemon_rss"], _ = memory_kib(e.pids()[:1])
    selected = [step for keys, step in STEPS if only is None or only & set(keys)]
    for i, step in enumerate(selected):
        for name, res in step(engines if i % 2 == 0 else engines[::-1], runs).items():
            results[name].update(res)
    return results


ROWS = [
    ("ping", "GET /_ping, kept-alive (200 requests)", "s"),
    ("run_rm", "docker run --rm busybox true", "s"),
    ("create", "docker create", "s"),
    ("start_a", "docker start -a", "s"),
    ("ps_a_50", "docker ps -a (50 containers)", "s"),
    ("logs_10k", "docker logs (10 000 lines)", "s"),
    ("exec_true", "docker exec <running> true", "s"),
    ("logs_tail_rotated", "docker logs --tail 100, 3x10 MB rotated", "s"),
    ("log_cpu_10x10", "engine CPU, 10 containers x 10 MB/s logs", "%"),
    ("cp_in_50m", "docker cp, 50 MiB dir into a container", "s"),
    ("cp_out_50m", "docker cp, 50 MiB dir out of it", "s"),
    ("commit_1m", "docker commit, running, 1 MiB change", "s"),
    ("build_cached", "docker build, 3 steps, all cached", "s"),
    ("build_nocache", "docker build, 3 steps, --no-cache", "s"),
    ("proxy_1g", "published port, 1 GiB host -> container", "B/s"),
    ("run_d_50_parallel", "50 x docker run -d, in parallel", "s"),
    ("stats_50", "docker stats --no-stream (50 running)", "s"),
    ("stats_cpu_50", "engine CPU, docker stats on 50 (10 s)", "%"),
    ("mem_daemon_rss", "memory idle, the daemon alone, RSS", "KiB"),
    ("mem_idle_rss", "memory idle, RSS", "KiB"),
    ("mem_idle_pss", "memory idle, PSS", "KiB"),
    ("mem_50_rss", "memory, 50 running, RSS", "KiB"),
    ("mem_50_pss", "memory, 50 running, PSS", "KiB"),
]


def _fmt(v: float, unit: str) -> str:
    if unit == "%":
        return f"{v * 100:8.1f} %"
    if unit == "B/s":
        return f"{v / 1e6:7.0f} MB/s"
    if unit == "s":
        return f"{v * 1000:8.3f} ms" if v < 0.01 else f"{v * 1000:8.1f} ms"
    return f"{v / 1024:8.1f} MiB"


def report(results: dict[str, Result]) -> str:
    names = list(results)
    lines = [f"{'':38}" + "".join(f"{n:>14}" for n in names) + ("       ratio" if len(names) == 2 else "")]
    for key, label, unit in ROWS:
        if not all(key in results[n] for n in names):
            continue
        line = f"{label:38}" + "".join(f"{_fmt(results[n][key], unit):>14}" for n in names)
        if len(names) == 2 and results[names[1]][key]:
            line += f"{results[names[0]][key] / results[names[1]][key]:11.2f}x"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--driver", default="btrfs")
    p.add_argument("--no-dockerd", action="store_true")
    p.add_argument("--only", default="", help="comma-separated row names (see ROWS), e.g. ping,create")
    args = p.parse_args(argv)
    # One bench at a time on this machine: two dockerds would fight over docker0, and two benches
    # over the CPU. The lock is released when the process exits.
    lock = open("/run/bocker-bench.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)
    tar = write_busybox_tar("/var/tmp/bocker-bench-busybox.tar")
    makers: list[Callable[[], Engine]] = [lambda: Bocker(args.driver)]
    if not args.no_dockerd and Dockerd.available():
        makers.append(Dockerd)
    else:
        print("dockerd not installed (Debian's docker.io): measuring bockerd alone")
    engines: list[Engine] = []
    try:
        for make in makers:
            engines.append(make())
        results = bench_engines(engines, tar, args.runs, set(args.only.split(",")) if args.only else None)
    finally:
        for e in engines:
            e.stop()
    print(f"\nruntime benchmark ({args.runs} runs each, medians; storage driver {args.driver})")
    print(report(results))
    subprocess.run(["true"])


if __name__ == "__main__":
    main()
