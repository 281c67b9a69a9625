"""Pull throughput: a ~85 MB, 5-layer image from a loopback registry, after rmi, in MB/s.

    .venv/bin/python -m bench.pull [--runs 3] [--driver btrfs]

MB/s counts the compressed bytes the registry serves (what `docker pull` downloads) over the
wall time of `docker pull`. While each pull runs, the stock `docker ps` is timed in a loop, to
show the daemon stays responsive: its max over all runs, its p95 in the last run and over all
runs, and its median on the idle daemon for reference. If `dockerd` is installed, the
same image is pulled by it in the same run, side by side. Needs root, like the daemon.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import statistics
import string
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bocker_engine.registry.client import Registry  # noqa: E402
from bocker_engine.registry.config import RegistryConfig  # noqa: E402
from bocker_engine.registry.manifest import DOCKER_CONFIG, DOCKER_LAYER, DOCKER_MANIFEST  # noqa: E402
from bocker_engine.registry.reference import parse  # noqa: E402
from tests.daemon import DOCKER, Daemon  # noqa: E402
from tests.registry_fixtures import start_registry  # noqa: E402

LAYERS = 5
LAYER_TARGET = 17 << 20  # compressed bytes per layer: 5 x 17 MiB ~ 85 MiB (89 MB)


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _text(n: int, rnd: random.Random) -> bytes:
    """Log- and source-like text: ~3.5x smaller gzipped, like the text files of real images."""
    vocab = ["".join(rnd.choice(string.ascii_lowercase) for _ in range(rnd.randint(2, 9))) for _ in range(3000)]
    lines = []
    size = 0
    while size < n:
        line = " ".join(rnd.choices(vocab, k=12)) + "\n"
        lines.append(line)
        size += len(line)
    return "".join(lines).encode()[:n]


def make_layer(n: int) -> tuple[bytes, str]:
    """A layer like real ones: binaries (incompressible) and text, ~1.8x smaller gzipped overall."""
    rnd = random.Random(n)
    text = _text(2 << 20, rnd)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        i = 0
        binary = 0
        while binary < LAYER_TARGET // 2:
            if i % 2:
                data = os.urandom(1 << 20)
                binary += len(data)
            else:
                data = text[(i * 4099) % len(text) :] + text[: (i * 4099) % len(text)]
            info = tarfile.TarInfo(f"layer{n}/dir{i % 7}/file{i}")
            info.size, info.mode, info.mtime = len(data), 0o644, 1700000000
            tf.addfile(info, io.BytesIO(data))
            i += 1
    tar = buf.getvalue()
    return gzip.compress(tar, compresslevel=6, mtime=0), _sha(tar)


async def _push(host: str, repo: str, layers: list[tuple[bytes, str]]) -> int:
    reg = Registry(RegistryConfig())
    try:
        ref = parse(f"{host}/{repo}:latest")
        ep = await reg.push_endpoint(ref, None)

        async def once(b: bytes) -> Any:
            for i in range(0, len(b), 4 << 20):
                yield b[i : i + (4 << 20)]

        descs: list[dict[str, Any]] = []
        for blob, _ in layers:
            d, n = await reg.upload_blob(ep, ref, once(blob), None)
            descs.append({"mediaType": DOCKER_LAYER, "size": n, "digest": d})
        config = json.dumps(
            {
                "architecture": "amd64",
                "os": "linux",
                "config": {"Cmd": ["sh"]},
                "rootfs": {"type": "layers", "diff_ids": [diff for _, diff in layers]},
            }
        ).encode()
        await reg.upload_blob(ep, ref, once(config), None, digest=_sha(config), size=len(config))
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": DOCKER_MANIFEST,
                "config": {"mediaType": DOCKER_CONFIG, "size": len(config), "digest": _sha(config)},
                "layers": descs,
            }
        ).encode()
        await reg.put_manifest(ep, ref, DOCKER_MANIFEST, manifest)
        return sum(d["size"] for d in descs)
    finally:
        await reg.close()


class Prober:
    """Times `docker ps` (the stock CLI, as the issue states the target) while a pull runs."""

    def __init__(self, sock: str) -> None:
        self.sock = sock
        self.env = dict(os.environ, DOCKER_HOST=f"unix://{sock}")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> float:
        t = time.perf_counter()
        subprocess.run([DOCKER, "ps"], env=self.env, capture_output=True, check=True)
        return time.perf_counter() - t

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self._once())
            except OSError:
                pass
            time.sleep(0.02)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _pull(env: dict[str, str], ref: str) -> float:
    t = time.perf_counter()
    r = subprocess.run([DOCKER, "pull", "-q", ref], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"pull failed: {r.stderr}")
    return elapsed


def _rmi(env: dict[str, str], ref: str) -> None:
    subprocess.run([DOCKER, "rmi", ref], env=env, capture_output=True)


def _p95(samples: list[float]) -> float:
    return sorted(samples)[int(len(samples) * 0.95)] if samples else float("nan")


def bench_bocker(ref: str, size: int, runs: int, driver: str) -> dict[str, Any]:
    d = Daemon(driver)
    try:
        d.start()
        idle = Prober(d.sock)
        idle_ms = statistics.median(idle._once() for _ in range(10)) * 1000
        times, worst, everything = [], [], []
        for _ in range(runs):
            _rmi(d.env, ref)
            with Prober(d.sock) as probe:
                times.append(_pull(d.env, ref))
            worst.append(max(probe.samples) if probe.samples else float("nan"))
            p95 = _p95(probe.samples)
            everything += probe.samples
        best = min(times)
        return {
            "engine": f"bockerd ({driver})",
            "mb_s_best": size / 1e6 / best,
            "mb_s_median": size / 1e6 / statistics.median(times),
            "seconds": times,
            "api_latency_idle_ms": idle_ms,
            "api_latency_max_ms": max(worst) * 1000,
            "api_latency_p95_ms_last": p95 * 1000,
            "api_latency_p95_ms_all": _p95(everything) * 1000,
        }
    finally:
        d.cleanup()


def bench_dockerd(ref: str, size: int, runs: int, host: str) -> dict[str, Any] | None:
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        return None
    base = tempfile.mkdtemp(prefix="bench-dockerd-", dir="/var/tmp")
    sock = os.path.join(base, "docker.sock")
    proc = subprocess.Popen(
        [
            dockerd,
            "-H",
            f"unix://{sock}",
            "--data-root",
            os.path.join(base, "data"),
            "--exec-root",
            os.path.join(base, "exec"),
            "--pidfile",
            os.path.join(base, "pid"),
            "--insecure-registry",
            host,
            "--bridge",
            "none",
            "--iptables=false",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    env = dict(os.environ, DOCKER_HOST=f"unix://{sock}", DOCKER_CONFIG=os.path.join(base, "cfg"))
    try:
        for _ in range(200):
            if subprocess.run([DOCKER, "version"], env=env, capture_output=True).returncode == 0:
                break
            time.sleep(0.1)
        times = []
        for _ in range(runs):
            _rmi(env, ref)
            times.append(_pull(env, ref))
        return {
            "engine": "dockerd",
            "mb_s_best": size / 1e6 / min(times),
            "mb_s_median": size / 1e6 / statistics.median(times),
            "seconds": times,
        }
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(base, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--driver", default="btrfs")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("bench.pull needs root", file=sys.stderr)
        return 1
    layers = [make_layer(i) for i in range(LAYERS)]
    with start_registry(None, mode="anonymous") as reg:
        # In real use the registry is another machine; here it shares our 2 cores, so it runs
        # at a lower priority, like the engines' own background work, not like the API.
        os.setpriority(os.PRIO_PROCESS, reg.process.pid, 10)
        size = asyncio.run(_push(reg.host, "bench/pull", layers))
        ref = f"{reg.host}/bench/pull:latest"
        print(f"image: {LAYERS} layers, {size / 1e6:.1f} MB compressed")
        results = [bench_bocker(ref, size, args.runs, args.driver)]
        other = bench_dockerd(ref, size, args.runs, reg.host)
        if other is None:
            print("dockerd: not installed, skipped")
        else:
            results.append(other)
        for r in results:
            line = f"{r['engine']:>18}: {r['mb_s_best']:7.1f} MB/s best, {r['mb_s_median']:7.1f} MB/s median"
            if "api_latency_max_ms" in r:
                line += (f", `docker ps` during pull: max {r['api_latency_max_ms']:.0f} ms, "
                         f"p95 {r['api_latency_p95_ms_last']:.0f} ms (all runs {r['api_latency_p95_ms_all']:.0f}; "
                         f"idle {r['api_latency_idle_ms']:.0f} ms)")
            print(line)
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
