"""The finer points of issue 2: import by URL, more filters, tty logs, stop signals, socket mode."""

from __future__ import annotations

import http.server
import json
import os
import stat
import threading
import time
from collections.abc import Iterator

import pytest

from tests.daemon import Daemon


@pytest.fixture
def served_tar(busybox_tar: str) -> Iterator[str]:
    """busybox.tar over HTTP on 127.0.0.1, for `docker import <url>`."""
    directory = os.path.dirname(busybox_tar)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=directory, **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{os.path.basename(busybox_tar)}"
    finally:
        server.shutdown()
        server.server_close()


def test_import_from_url(dm: Daemon, served_tar: str) -> None:
    out = dm.out("import", served_tar, "fromurl:1")
    assert out.startswith("sha256:")
    assert dm.out("run", "--rm", "fromurl:1", "echo", "ok") == "ok\n"
    comment = json.loads(dm.out("image", "inspect", "fromurl:1"))[0]["RootFS"]
    assert len(comment["Layers"]) == 1
    dm.out("rmi", "fromurl:1")
    r = dm.docker("import", served_tar + ".missing", "nope:1")
    assert r.returncode != 0


def test_image_filters_label_before_since(dm: Daemon, busybox_tar: str) -> None:
    a = dm.out("import", "-c", "LABEL tier=a", busybox_tar, "filt:a").strip()
    time.sleep(1.1)  # image times have second resolution in lists
    b = dm.out("import", "-c", "LABEL tier=b", busybox_tar, "filt:b").strip()
    ids = lambda *f: set(dm.out("images", "-q", "--no-trunc", *f).split())  # noqa: E731
    assert ids("-f", "label=tier=a") == {a}
    assert ids("-f", "label=tier") == {a, b}
    assert b in ids("-f", "since=filt:a") and a not in ids("-f", "since=filt:a")
    assert a in ids("-f", "before=filt:b") and b not in ids("-f", "before=filt:b")
    dm.out("rmi", "filt:a", "filt:b")


def test_logs_tty_until_and_stream_selection(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "-t", "busybox", "sh", "-c", "echo on-tty; echo err-tty >&2").strip()
    dm.out("wait", cid)
    api = dm.api()
    # A tty merges the streams and ends lines with \r\n (raw stream, no stdcopy frames), as in Docker.
    assert api.logs(cid) == b"on-tty\r\nerr-tty\r\n"
    r = dm.docker("logs", cid)
    assert r.stdout.splitlines() == ["on-tty", "err-tty"] and r.stderr == ""
    cid = dm.out("run", "-d", "busybox", "sh", "-c", "echo first; sleep 1.2; echo second >&2").strip()
    dm.out("wait", cid)
    from bocker_engine.timefmt import parse_rfc3339

    stamped = api.logs(cid, timestamps=True).decode().splitlines()
    assert all(len(line.split(" ", 1)[0]) == 30 for line in stamped)
    first_at = parse_rfc3339(stamped[0].split(" ", 1)[0]) / 1e9
    between = f"{first_at + 0.6:.3f}"
    until = dm.docker("logs", "--until", between, cid)
    assert until.stdout == "first\n" and until.stderr == ""
    since = dm.docker("logs", "--since", between, cid)
    assert since.stdout == "" and since.stderr == "second\n"
    assert api.logs(cid, stdout=True, stderr=False) == b"first\n"
    assert api.logs(cid, stdout=False, stderr=True) == b"second\n"
    api.close()


def test_ps_exited_filter(dm: Daemon) -> None:
    ok = dm.out("run", "-d", "busybox", "true").strip()
    bad = dm.out("run", "-d", "busybox", "sh", "-c", "exit 4").strip()
    dm.out("wait", ok, bad)
    assert dm.out("ps", "-aq", "--no-trunc", "-f", "exited=4").split() == [bad]
    assert dm.out("ps", "-aq", "--no-trunc", "-f", "exited=0").split() == [ok]
    r = dm.docker("ps", "-f", "exited=x")
    assert r.returncode == 1


def test_stop_signal_from_flag_and_state_times(dm: Daemon) -> None:
    cid = dm.out("run", "-d", "--stop-signal", "USR1", "--stop-timeout", "5", "busybox", "sh", "-c",
                 "trap 'echo got-usr1; exit 7' USR1; echo trapped; while :; do sleep 0.1; done").strip()
    dm.wait_log(cid, "trapped")
    dm.out("stop", cid)
    assert "got-usr1" in dm.out("logs", cid)
    state = json.loads(dm.out("inspect", cid))[0]["State"]
    assert state["ExitCode"] == 7 and state["Status"] == "exited"
    for key in ("StartedAt", "FinishedAt"):
        assert len(state[key]) == 30 and state[key].endswith("Z")
    assert state["FinishedAt"] > state["StartedAt"]


def test_wait_conditions_with_dockerpy(dm: Daemon) -> None:
    api = dm.api()
    c = api.create_container("busybox", "sh -c 'exit 5'")
    # not-running returns at once for a created container
    assert api.wait(c)["StatusCode"] == 0
    api.start(c)
    assert api.wait(c)["StatusCode"] == 5
    c2 = api.create_container("busybox", "true", host_config=api.create_host_config(auto_remove=True))
    api.start(c2)
    assert api.wait(c2, condition="removed")["StatusCode"] == 0
    api.remove_container(c)
    api.close()


def test_socket_is_0660(dm: Daemon) -> None:
    mode = stat.S_IMODE(os.stat(dm.sock).st_mode)
    assert mode == 0o660


def test_oom_killed(dm: Daemon) -> None:
    r = dm.docker("run", "--name", "oomer", "-m", "8m", "--memory-swap", "8m", "busybox", "sh", "-c",
                  'x=$(head -c 50000000 /dev/zero | tr "\\0" a); echo survived')
    assert r.returncode == 137 and "survived" not in r.stdout
    assert dm.out("inspect", "-f", "{{.State.OOMKilled}} {{.State.ExitCode}}", "oomer").split() == ["true", "137"]
