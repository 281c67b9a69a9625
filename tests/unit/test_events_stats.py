"""Pure logic of events (filters, replay, slow subscribers), stats frames and prune labels."""

from __future__ import annotations

import asyncio
from typing import Any

from bocker_engine.engine import events as ev
from bocker_engine.engine import filters as flt
from bocker_engine.engine import stats as st


def _ev(type_: str, action: str, actor: str, **attrs: str) -> dict[str, Any]:
    return {"Type": type_, "Action": action, "Actor": {"ID": actor, "Attributes": attrs}, "scope": "local"}


def test_filters_or_within_a_key_and_across_keys() -> None:
    m = ev.event_matcher({"event": ["start", "die"], "type": ["container"]})
    assert m(_ev("container", "start", "a" * 64, name="x"))
    assert m(_ev("container", "die", "a" * 64, name="x"))
    assert not m(_ev("container", "create", "a" * 64, name="x"))
    assert not m(_ev("image", "start", "sha256:1", name="x"))


def test_container_filter_matches_id_or_name_by_prefix_and_excludes_other_actors() -> None:
    m = ev.event_matcher({"container": ["web"]})
    assert m(_ev("container", "start", "f" * 64, name="web1"))
    assert not m(_ev("container", "start", "f" * 64, name="db"))
    assert ev.event_matcher({"container": ["fff"]})(_ev("container", "start", "f" * 64, name="db"))
    assert not m(_ev("network", "connect", "n" * 64, name="bridge", container="web1"))


def test_image_filter_matches_container_image_and_stripped_tags() -> None:
    m = ev.event_matcher({"image": ["busybox"]})
    assert m(_ev("container", "create", "c" * 64, image="busybox:latest", name="x"))
    assert m(_ev("image", "tag", "sha256:1", name="busybox:1"))
    assert not m(_ev("image", "tag", "sha256:1", name="alpine:1"))


def test_label_filter_needs_every_label() -> None:
    m = ev.event_matcher({"label": ["a=1", "b"]})
    assert m(_ev("container", "start", "c", a="1", b="z"))
    assert not m(_ev("container", "start", "c", a="1"))
    assert not m(_ev("container", "start", "c", a="2", b="z"))


def test_fuzzy_event_names_for_exec_and_health() -> None:
    m = ev.event_matcher({"event": ["exec_start"]})
    assert m(_ev("container", "exec_start: sh -c true", "c"))


def test_replay_since_until_and_legacy_fields() -> None:
    async def run() -> None:
        bus = ev.Events()
        first = bus.publish("container", "create", "c1", {"image": "busybox", "name": "x"})
        second = bus.publish("image", "tag", "sha256:1", {"name": "b:1"})
        assert first["status"] == "create" and first["id"] == "c1" and first["from"] == "busybox"
        assert "from" not in second and second["status"] == "tag"
        buffered, sub = bus.subscribe({}, since_ns=first["timeNano"] + 1)
        assert buffered == [second]
        bus.unsubscribe(sub)
        buffered, sub = bus.subscribe({}, since_ns=1, until_ns=first["timeNano"])
        assert buffered == [first]
        bus.unsubscribe(sub)
        buffered, sub = bus.subscribe({})
        assert buffered == [] and bus.listeners == 1
        bus.unsubscribe(sub)

    asyncio.run(run())


def test_a_subscriber_that_stops_reading_is_dropped_not_waited_for() -> None:
    async def run() -> None:
        bus = ev.Events()
        _, slow = bus.subscribe({})
        _, other = bus.subscribe({"type": ["image"]})
        for i in range(ev.QUEUE_SIZE + 5):
            bus.publish("container", "start", str(i), {})
        assert slow.dropped and bus.listeners == 1 and not other.dropped
        items = [slow.queue.get_nowait() for _ in range(slow.queue.qsize())]
        assert items[-1] is None and len(items) == ev.QUEUE_SIZE + 1
        assert len(bus.history) == ev.HISTORY

    asyncio.run(run())


NET_DEV = """Inter-|   Receive |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
    lo: 100 2 0 0 0 0 0 0 100 2 0 0 0 0 0 0
  eth0: 1234 10 1 2 0 0 0 0 567 5 3 4 0 0 0 0
"""


def test_net_dev_per_interface_without_loopback() -> None:
    assert st.parse_net_dev(NET_DEV) == {
        "eth0": {
            "rx_bytes": 1234,
            "rx_packets": 10,
            "rx_errors": 1,
            "rx_dropped": 2,
            "tx_bytes": 567,
            "tx_packets": 5,
            "tx_errors": 3,
            "tx_dropped": 4,
        }
    }


class _C:
    id = "c" * 64
    name = "/x"


def test_frames_zero_value_and_omitempty() -> None:
    zero = st.frame(_C(), None, None)  # type: ignore[arg-type]
    assert zero["read"] == zero["preread"] == st.ZERO_TIME
    assert zero["memory_stats"] == {} and zero["pids_stats"] == {} and zero["storage_stats"] == {}
    assert zero["cpu_stats"] == {
        "cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
        "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0},
    }
    assert zero["blkio_stats"]["io_service_bytes_recursive"] is None and "networks" not in zero
    raw = {
        "memory_stats": {"usage": 5, "max_usage": 0, "failcnt": 0, "limit": 9, "stats": {"cache": 0}},
        "cpu_stats": {"cpu_usage": {"total_usage": 7, "percpu_usage": []}, "system_cpu_usage": 11, "online_cpus": 2},
        "pids_stats": {"current": 1, "limit": 0},
    }
    s = st.format_stats(raw)
    assert s["memory_stats"] == {"usage": 5, "limit": 9, "stats": {"cache": 0}}
    assert s["pids_stats"] == {"current": 1}
    assert "percpu_usage" not in s["cpu_stats"]["cpu_usage"] and s["cpu_stats"]["online_cpus"] == 2
    a, b = st.Sample("2024-01-01T00:00:00.1Z", s), st.Sample("2024-01-01T00:00:01.1Z", s)
    f = st.frame(_C(), b, a)  # type: ignore[arg-type]
    assert f["precpu_stats"] == s["cpu_stats"] and f["preread"] == a.read and f["name"] == "/x"


def test_prune_labels_like_dockerd() -> None:
    labels = {"a": "1", "keep": "yes"}
    assert flt.match_prune_labels({"label": ["a=1"]}, labels)
    assert not flt.match_prune_labels({"label": ["a=2"]}, labels)
    assert not flt.match_prune_labels({"label!": ["keep"]}, labels)
    assert flt.match_prune_labels({"label!": ["keep", "other"]}, labels)  # not every label! holds
    assert flt.match_prune_labels({"label!": ["keep=no"]}, labels)
