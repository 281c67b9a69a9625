"""Unit tests for the pure parts: framing, filters, references, names, states, config, changes."""

from __future__ import annotations

import json
import os

import pytest

from bocker_engine import config as config_mod
from bocker_engine.api.streams import encode_message
from bocker_engine.build.dockerfile import apply_config_change, parse_key_values, split_words
from bocker_engine.engine import container_config as cc
from bocker_engine.engine import filters as flt
from bocker_engine.engine import signals
from bocker_engine.engine.ids import by_prefix, lookup, random_name
from bocker_engine.engine.layers import chain_ids
from bocker_engine.engine.state import State, human_duration
from bocker_engine.errors import InvalidParameter, NotFound
from bocker_engine.logs import _tail_offset
from bocker_engine.progress import Message
from bocker_engine.registry import reference as refs
from bocker_engine.runtime.stdio import frame, log_line, parse_frames, parse_rfc3339, rfc3339nano


def test_stdcopy_roundtrip_and_split() -> None:
    data = frame(1, b"hello") + frame(2, b"err") + frame(1, b"x" * 70000)
    frames, rest = parse_frames(data)
    assert rest == b""
    assert frames[0] == (1, b"hello") and frames[1] == (2, b"err")
    assert b"".join(p for s, p in frames[2:]) == b"x" * 70000
    assert data[:8] == b"\x01\x00\x00\x00\x00\x00\x00\x05"
    part, rest = parse_frames(data[:10])
    assert part == [] and rest == data[:10]


def test_times() -> None:
    ns = 1795934329452889897
    s = rfc3339nano(ns)
    assert s == "2026-11-29T06:38:49.452889897Z"
    assert parse_rfc3339(s) == ns
    assert parse_rfc3339("2026-11-29T07:38:49+01:00") == ns // 10**9 * 10**9
    line = json.loads(log_line("stdout", b"hi\n", ns))
    assert line == {"log": "hi\n", "stream": "stdout", "time": s}


def test_human_duration() -> None:
    assert human_duration(0.5) == "Less than a second"
    assert human_duration(1) == "1 second"
    assert human_duration(59) == "59 seconds"
    assert human_duration(61) == "About a minute"
    assert human_duration(600) == "10 minutes"
    assert human_duration(3600) == "About an hour"
    assert human_duration(5 * 3600) == "5 hours"
    assert human_duration(3 * 86400) == "3 days"
    assert human_duration(20 * 86400) == "2 weeks"


def test_state_text() -> None:
    st = State()
    assert st.text() == "Created" and st.status_word() == "created"
    st.set_running(42, 10**18)
    assert st.text().startswith("Up ") and st.status_word() == "running"
    st.Paused = True
    assert st.text().endswith("(Paused)") and st.status_word() == "paused"
    st.set_stopped(3)
    assert st.text().startswith("Exited (3) ") and st.text().endswith(" ago")


def test_filters_both_shapes() -> None:
    assert flt.parse('{"label":{"a=b":true},"status":{"running":true}}') == {"label": ["a=b"], "status": ["running"]}
    assert flt.parse('{"label": ["a=b"]}') == {"label": ["a=b"]}
    with pytest.raises(InvalidParameter):
        flt.parse("not json")
    with pytest.raises(InvalidParameter, match="invalid filter 'x'"):
        flt.check({"x": []}, {"label"})
    assert flt.match_labels(["a", "b=2"], {"a": "1", "b": "2"})
    assert not flt.match_labels(["b=3"], {"b": "2"})
    assert not flt.match_labels(["b!=2"], {"b": "2"})
    assert flt.bool_filter({"dangling": ["true"]}, "dangling") is True
    with pytest.raises(InvalidParameter):
        flt.bool_filter({"dangling": ["maybe"]}, "dangling")
    assert flt.match_reference("me/*", refs.parse("me/box:1"))
    assert flt.match_reference("busybox", refs.parse("busybox:latest"))
    assert flt.match_reference("busybox:l*", refs.parse("busybox:latest"))
    assert not flt.match_reference("busybox:1", refs.parse("busybox:latest"))
    assert flt.parse_timestamp("10m", now=1000.0) == 400.0
    assert flt.parse_timestamp("1700000000.5") == 1700000000.5


def test_references() -> None:
    r = refs.parse("busybox")
    assert (r.domain, r.path, r.tag) == ("docker.io", "library/busybox", None)
    assert r.tagged_or_latest().familiar() == "busybox:latest"
    assert str(r.tagged_or_latest()) == "docker.io/library/busybox:latest"
    assert refs.parse("docker.io/library/busybox:1").familiar() == "busybox:1"
    assert refs.parse("index.docker.io/me/app").familiar() == "me/app"
    r = refs.parse("127.0.0.1:5000/me/box:1")
    assert (r.domain, r.path, r.tag) == ("127.0.0.1:5000", "me/box", "1")
    assert refs.parse("localhost/x").domain == "localhost"
    assert refs.parse("host:5000").tag == "5000"
    d = "sha256:" + "a" * 64
    assert refs.parse(f"me/app@{d}").digest == d
    assert refs.parse_repo_tag("x:v1", None).familiar() == "x:v1"
    assert refs.parse_repo_tag("docker.io/library/x", "v2").familiar() == "x:v2"
    assert refs.parse_repo_tag("x", d).digest == d
    with pytest.raises(InvalidParameter, match="must be lowercase"):
        refs.parse("Busybox")
    with pytest.raises(InvalidParameter, match="64-byte hexadecimal"):
        refs.parse("a" * 64)
    for bad in ("", "a b", "x:", "-x", "x@sha256:zz"):
        with pytest.raises(InvalidParameter):
            refs.parse(bad)


def test_lookup_and_names() -> None:
    ids = {"abc1" + "0" * 60: 1, "abc2" + "0" * 60: 2, "def" + "0" * 61: 3}
    names = {"web": "def" + "0" * 61}
    assert lookup("web", ids, names, "x") == 3
    assert lookup("/web", ids, names, "x") == 3
    assert lookup("abc1", ids, names, "x") == 1
    with pytest.raises(InvalidParameter, match="multiple IDs found with provided prefix: abc"):
        lookup("abc", ids, names, "x")
    with pytest.raises(NotFound, match="No such container: zz"):
        lookup("zz", ids, names, "No such container: zz")
    assert by_prefix("not-hex", ids) is None
    taken = {"a"}
    name = random_name(lambda n: n in taken)
    assert "_" in name and name != "boring_wozniak"


def test_chain_ids() -> None:
    import hashlib

    a, b = "sha256:" + "1" * 64, "sha256:" + "2" * 64
    c = chain_ids([a, b])
    assert c[0] == a
    assert c[1] == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()


def test_signals() -> None:
    assert signals.parse("TERM") == 15 == signals.parse("SIGTERM") == signals.parse("15")
    assert signals.parse(None) == 9
    assert signals.parse("usr1") == 10
    assert signals.parse("SIGRTMIN+1") > 32
    for bad in ("NOPE", "0", "999"):
        with pytest.raises(InvalidParameter):
            signals.parse(bad)


def test_dockerfile_changes() -> None:
    cfg: dict[str, object] = {}
    apply_config_change(cfg, 'CMD ["sh", "-c", "echo hi"]')
    assert cfg["Cmd"] == ["sh", "-c", "echo hi"]
    apply_config_change(cfg, "CMD echo shell form")
    assert cfg["Cmd"] == ["/bin/sh", "-c", "echo shell form"]
    apply_config_change(cfg, 'ENV A=1 B="two words"')
    apply_config_change(cfg, "ENV C three words")
    assert cfg["Env"] == ["A=1", "B=two words", "C=three words"]
    apply_config_change(cfg, "ENV A=2")
    assert cfg["Env"] == ["B=two words", "C=three words", "A=2"]
    apply_config_change(cfg, "LABEL a=b c=d")
    assert cfg["Labels"] == {"a": "b", "c": "d"}
    apply_config_change(cfg, "EXPOSE 80 53/udp")
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    apply_config_change(cfg, "WORKDIR /a")
    apply_config_change(cfg, "WORKDIR b")
    assert cfg["WorkingDir"] == "/a/b"
    apply_config_change(cfg, "USER app")
    apply_config_change(cfg, "STOPSIGNAL SIGINT")
    apply_config_change(cfg, 'ENTRYPOINT ["/bin/true"]')
    assert cfg["Entrypoint"] == ["/bin/true"] and cfg["Cmd"] is None
    apply_config_change(cfg, "VOLUME /data")
    assert cfg["Volumes"] == {"/data": {}}
    with pytest.raises(InvalidParameter, match="not a valid change command"):
        apply_config_change(cfg, "RUN echo")
    assert split_words("a 'b c' \"d\\\"e\" f\\ g") == ["a", "b c", 'd"e', "f g"]
    assert parse_key_values("ENV", "k v w") == [("k", "v w")]


def test_container_config_merge() -> None:
    image = {"Env": ["PATH=/bin", "A=img"], "Cmd": ["sh"], "WorkingDir": "/w", "Labels": {"l": "img"},
             "StopSignal": "SIGINT"}
    cfg = cc.normalize_config({"Env": ["A=user"], "Labels": {"m": "u"}}, image, "img", "c" * 64)
    assert cfg["Env"] == ["A=user", "PATH=/bin"]
    assert cfg["Cmd"] == ["sh"] and cfg["WorkingDir"] == "/w"
    assert cfg["Labels"] == {"l": "img", "m": "u"}
    assert cfg["Hostname"] == "c" * 12 and cfg["StopSignal"] == "SIGINT"
    cfg = cc.normalize_config({"Entrypoint": ["echo"]}, image, "img", "c" * 64)
    assert cfg["Entrypoint"] == ["echo"] and cfg["Cmd"] is None
    with pytest.raises(InvalidParameter, match="No command specified"):
        cc.normalize_config({}, {}, "img", "c" * 64)
    with pytest.raises(InvalidParameter, match="working directory"):
        cc.normalize_config({"Cmd": ["x"], "WorkingDir": "rel"}, {}, "img", "c" * 64)
    hc = cc.normalize_host_config({"LogConfig": {"Type": "", "Config": {}}, "NetworkMode": "default",
                                   "RestartPolicy": {"Name": "", "MaximumRetryCount": 0}})
    assert hc["LogConfig"]["Type"] == "json-file" and hc["NetworkMode"] == "bridge"
    assert hc["RestartPolicy"]["Name"] == "no"
    with pytest.raises(InvalidParameter):
        cc.normalize_host_config({"AutoRemove": True, "RestartPolicy": {"Name": "always"}})
    assert cc.parse_bind("/h:/c:ro") == ("/h", "/c", True)
    with pytest.raises(InvalidParameter):
        cc.parse_bind("/h:rel")
    assert "CAP_NET_ADMIN" in cc.capabilities({"CapAdd": ["NET_ADMIN"]})
    assert "CAP_CHOWN" not in cc.capabilities({"CapDrop": ["chown"]})
    assert cc.capabilities({"CapDrop": ["ALL"]}) == []
    with pytest.raises(InvalidParameter):
        cc.capabilities({"CapAdd": ["NOPE"]})


def test_json_messages() -> None:
    assert encode_message(Message(status="Pulling fs layer", id="abc", detail=True)) == {
        "status": "Pulling fs layer", "progressDetail": {}, "id": "abc"}
    m = encode_message(Message(status="Downloading", id="abc", current=50, total=100))
    assert m["progressDetail"] == {"current": 50, "total": 100} and m["progress"].startswith("[")
    assert encode_message(Message(error="boom", error_code=7)) == {
        "errorDetail": {"message": "boom", "code": 7}, "error": "boom"}
    assert encode_message(Message(stream="Step 1/2\n")) == {"stream": "Step 1/2\n"}


def test_log_tail_offset(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "log")
    with open(path, "wb") as f:
        for i in range(1000):
            f.write(f"line{i}\n".encode())
    with open(path, "rb") as f:
        f.seek(_tail_offset(path, 3))
        assert f.read() == b"line997\nline998\nline999\n"
    assert _tail_offset(path, 5000) == 0


def test_config_flags_and_file(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "daemon.json")
    with open(path, "w") as f:
        json.dump({"data-root": "/x", "registry-mirrors": ["http://m"], "live-restore": True}, f)
    cfg = config_mod.load(["--config-file", path, "-H", "unix:///tmp/s.sock", "--storage-driver", "overlay"])
    assert cfg.data_root == "/x" and cfg.registry_mirrors == ["http://m"] and cfg.live_restore
    assert cfg.hosts == ["unix:///tmp/s.sock"] and cfg.storage_driver == "overlay2"
    with pytest.raises(config_mod.ConfigError, match="both as a flag and in the configuration file: data-root"):
        config_mod.load(["--config-file", path, "--data-root", "/y"])
    with open(path, "w") as f:
        json.dump({"bogus": 1}, f)
    with pytest.raises(config_mod.ConfigError, match="don't match any configuration option: bogus"):
        config_mod.load(["--config-file", path])
    with pytest.raises(config_mod.ConfigError):
        config_mod.load(["--config-file", os.path.join(str(tmp_path), "missing.json")])
