"""`docker events` and docker-py `client.events()` (issue 12): order, attributes, filters, replay
with since/until, live streaming."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import threading
import time
from typing import Any

from tests.daemon import DOCKER, Daemon, wait_until


def _events(dm: Daemon, since: float, *args: str) -> list[dict[str, Any]]:
    until = time.time() + 0.001
    out = dm.out("events", "--since", f"{since:.9f}", "--until", f"{until:.9f}", *args, "--format", "{{json .}}")
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def _in_order(actions: list[str], expected: list[str]) -> bool:
    """`expected` appears in `actions` in this order (other events may come between)."""
    it = iter(actions)
    return all(any(a == e for a in it) for e in expected)


def test_container_life_in_order_with_dockerd_attributes(dm: Daemon) -> None:
    t0 = time.time()
    cid = dm.out("run", "-d", "--name", "evlife", "--label", "team=a", "busybox", "sleep", "1000").strip()
    dm.out("pause", "evlife")
    dm.out("unpause", "evlife")
    dm.out("rename", "evlife", "evlife2")
    dm.out("kill", "-s", "KILL", "evlife2")
    dm.out("wait", "evlife2")
    dm.out("rm", "evlife2")
    evs = _events(dm, t0, "--filter", f"container={cid}")
    actions = [e["Action"] for e in evs]
    assert _in_order(actions, ["create", "start", "pause", "unpause", "rename", "kill", "die", "destroy"]), actions
    for e in evs:
        assert e["Type"] == "container" and e["Actor"]["ID"] == cid and e["scope"] == "local"
        assert e["id"] == cid and e["status"] == e["Action"] and e["from"] == "busybox"
        assert e["Actor"]["Attributes"]["image"] == "busybox" and e["Actor"]["Attributes"]["team"] == "a"
        assert e["time"] == e["timeNano"] // 10**9
    by = {e["Action"]: e["Actor"]["Attributes"] for e in evs}
    assert by["create"]["name"] == "evlife" and by["destroy"]["name"] == "evlife2"
    assert by["rename"]["oldName"] == "/evlife"
    assert by["kill"]["signal"] == "9"
    assert by["die"]["exitCode"] == "137" and "execDuration" in by["die"]
    assert [e["timeNano"] for e in evs] == sorted(e["timeNano"] for e in evs)
    # The bridge endpoint: connect before start, disconnect after die, naming the container.
    net = _events(dm, t0, "--filter", "type=network", "--filter", "network=bridge")
    mine = [e for e in net if e["Actor"]["Attributes"].get("container") == cid]
    assert [e["Action"] for e in mine] == ["connect", "disconnect"]
    all_evs = _events(dm, t0)
    keyed = [
        (e["Type"], e["Action"])
        for e in all_evs
        if cid in (e["Actor"]["ID"], e["Actor"]["Attributes"].get("container"))
    ]
    assert _in_order(
        [f"{t} {a}" for t, a in keyed],
        ["container create", "network connect", "container start", "container die", "network disconnect"],
    ), keyed


def test_filters_same_key_or_different_keys_and(dm: Daemon) -> None:
    t0 = time.time()
    a = dm.out("run", "-d", "--name", "evfa", "--label", "grp=x", "busybox", "true").strip()
    b = dm.out("run", "-d", "--name", "evfb", "busybox", "true").strip()
    dm.out("wait", a, b)
    cli = _events(dm, t0, "--filter", "event=start", "--filter", "event=die", "--filter", "label=grp=x")
    assert [(e["Actor"]["ID"], e["Action"]) for e in cli] == [(a, "start"), (a, "die")]
    # Name prefixes match like dockerd's FuzzyMatch; type restricts.
    names = _events(dm, t0, "--filter", "container=evf", "--filter", "type=container", "--filter", "event=create")
    assert [e["Actor"]["ID"] for e in names] == [a, b]
    # docker-py: since/until replay, list-shaped filters, image filter on container events.
    client = dm.api()
    gen = client.events(
        since=t0, until=time.time() + 0.001, decode=True, filters={"image": "busybox", "event": ["create"]}
    )
    got = [e["Actor"]["ID"] for e in gen if e["Actor"]["ID"] in (a, b)]
    assert got == [a, b]
    client.close()
    assert _events(dm, t0, "--filter", "type=image", "--filter", f"container={a}") == []


def test_image_events_tag_untag_import_delete(dm: Daemon, busybox_tar: str) -> None:
    t0 = time.time()
    dm.out("import", "-c", "LABEL kind=evimg", busybox_tar, "evimg:1")
    iid = json.loads(dm.out("image", "inspect", "evimg:1"))[0]["Id"]
    dm.out("tag", "evimg:1", "evimg:2")
    dm.out("rmi", "evimg:2")
    dm.out("rmi", "evimg:1")
    evs = _events(dm, t0, "--filter", "type=image")
    got = [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"].get("name")) for e in evs]
    assert got == [
        ("tag", iid, "evimg:1"),
        ("import", iid, iid),
        ("tag", iid, "evimg:2"),
        ("untag", iid, iid),
        ("untag", iid, iid),
        ("delete", iid, iid),
    ], got
    assert evs[0]["Actor"]["Attributes"]["kind"] == "evimg"  # the image's labels, like dockerd
    assert all(e["status"] == e["Action"] and "from" not in e for e in evs)
    only = _events(dm, t0, "--filter", "image=evimg", "--filter", "event=tag")
    assert [e["Actor"]["Attributes"]["name"] for e in only] == ["evimg:1", "evimg:2"]


def _read_lines(proc: subprocess.Popen[bytes], want: int, timeout: float) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    buf = b""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(out) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"only {out} within {timeout}s"
        if not sel.select(left):
            continue
        chunk = os.read(proc.stdout.fileno(), 65536)
        assert chunk, f"stream ended after {out}"
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            out.append(json.loads(line))
    return out


def test_live_stream_while_a_container_starts(dm: Daemon) -> None:
    proc = subprocess.Popen(
        [DOCKER, "events", "--filter", "container=evlive", "--format", "{{json .}}"],
        env=dm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: dm.info()["NEventsListener"] >= 1, what="the CLI subscribed")
        dm.out("create", "--name", "evlive", "busybox", "sleep", "1000")
        assert [e["Action"] for e in _read_lines(proc, 1, 20)] == ["create"]
        # Still streaming: the next event arrives while the CLI keeps running.
        dm.out("start", "evlive")
        assert [e["Action"] for e in _read_lines(proc, 1, 20)] == ["start"]
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
    wait_until(lambda: dm.info()["NEventsListener"] == 0, what="the subscriber gone")


def test_until_in_the_future_keeps_streaming_then_ends(dm: Daemon) -> None:
    t0 = time.time()
    until = time.time() + 3
    result: dict[str, Any] = {}

    def run() -> None:
        result["r"] = dm.docker(
            "events",
            "--since",
            f"{t0:.9f}",
            "--until",
            f"{until:.9f}",
            "--filter",
            "container=evfut",
            "--format",
            "{{.Action}}",
            timeout=30,
        )

    th = threading.Thread(target=run)
    th.start()
    wait_until(lambda: dm.info()["NEventsListener"] >= 1, what="the CLI subscribed")
    dm.out("create", "--name", "evfut", "busybox", "true")
    th.join(30)
    assert not th.is_alive()
    assert result["r"].returncode == 0 and result["r"].stdout.split() == ["create"]


def test_since_after_until_is_refused(dm: Daemon) -> None:
    r = dm.docker("events", "--since", "200", "--until", "100")
    assert r.returncode != 0 and "cannot be after `until` time" in r.stderr


def test_stop_reports_its_signals_like_dockerd(dm: Daemon) -> None:
    """`docker stop` of a process that ignores TERM: kill(15), kill(9), die, stop, as dockerd logs them."""
    t0 = time.time()
    cid = dm.out("run", "-d", "busybox", "sleep", "1000").strip()
    dm.out("stop", "-t", "1", cid)
    evs = _events(dm, t0, "--filter", f"container={cid}")
    seq = [(e["Action"], e["Actor"]["Attributes"].get("signal", "")) for e in evs]
    assert _in_order([f"{a} {s}".strip() for a, s in seq], ["kill 15", "kill 9", "die", "stop"]), seq
    dm.out("rm", cid)
