"""engine/restart.py: dockerd's restart decisions, back-off and the pending-restart tasks."""

from __future__ import annotations

import asyncio
import signal

from bocker_engine.engine.restart import (
    BACKOFF_MAX,
    Manager,
    Policy,
    Restarts,
    kill_cancels,
    next_delay,
    wants_restart,
)

ALWAYS = Policy("always")
UNLESS = Policy("unless-stopped")


def test_policy_from_host_config() -> None:
    assert Policy.of({}).none
    assert Policy.of({"RestartPolicy": {"Name": "", "MaximumRetryCount": 0}}).none
    assert Policy.of({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}}) == Policy("on-failure", 3)


def test_wants_restart_per_policy() -> None:
    assert not wants_restart(Policy("no"), 1, False, 0)
    assert wants_restart(ALWAYS, 0, False, 0)
    assert wants_restart(ALWAYS, 0, True, 99)  # a stop by hand acts through the manager's cancel
    assert wants_restart(UNLESS, 0, False, 0)
    assert not wants_restart(UNLESS, 1, True, 0)
    assert not wants_restart(Policy("on-failure"), 0, False, 0)
    assert wants_restart(Policy("on-failure"), 3, False, 1000)  # 0: no limit
    assert wants_restart(Policy("on-failure", 3), 3, False, 2)
    assert not wants_restart(Policy("on-failure", 3), 3, False, 3)


def test_backoff_doubles_from_100ms_caps_at_a_minute() -> None:
    delays, d = [], 0.0
    for _ in range(14):
        d = next_delay(d, ran_for=0.01)
        delays.append(d)
    assert delays[:5] == [0.1, 0.2, 0.4, 0.8, 1.6]
    assert delays[9] == 51.2
    assert delays[10:] == [BACKOFF_MAX] * 4


def test_backoff_resets_after_ten_seconds_of_running() -> None:
    assert next_delay(6.4, ran_for=9.99) == 12.8
    assert next_delay(6.4, ran_for=10.0) == 0.1
    assert next_delay(BACKOFF_MAX, ran_for=30) == 0.1


def test_manager_counts_backoff_and_honours_cancel() -> None:
    m = Manager()
    assert m.on_exit(Policy("on-failure", 2), 1, False, 0.0, 0) == 0.1
    assert m.on_exit(Policy("on-failure", 2), 1, False, 0.0, 1) == 0.2
    assert m.on_exit(Policy("on-failure", 2), 1, False, 0.0, 2) is None
    m = Manager()
    assert m.on_exit(Policy("no"), 1, False, 0.0, 0) is None
    assert m.delay == 0  # a policy of "no" leaves the back-off alone, as dockerd's
    m.cancelled = True
    assert m.on_exit(ALWAYS, 0, False, 0.0, 0) is None


def test_kill_cancels_like_exit_on_next() -> None:
    assert kill_cancels(signal.SIGKILL, None)
    assert kill_cancels(signal.SIGHUP, None)  # no StopSignal: any signal
    assert kill_cancels(signal.SIGKILL, "SIGUSR1")
    assert kill_cancels(signal.SIGUSR1, "SIGUSR1")
    assert kill_cancels(signal.SIGUSR1, "USR1")
    assert not kill_cancels(signal.SIGHUP, "SIGUSR1")


def test_restarts_ignore_exits_during_shutdown() -> None:
    async def main() -> None:
        r = Restarts()
        hc = {"RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}}
        assert r.on_exit("c", hc, 0, False, 0.0, 0) == 0.1
        assert await r.shutdown() == []
        assert r.on_exit("c", hc, 0, False, 0.0, 0) is None

    asyncio.run(asyncio.wait_for(main(), 10))


def test_pending_restart_runs_after_delay_and_cancel_stops_it() -> None:
    async def main() -> None:
        r, lock, started = Restarts(), asyncio.Lock(), []

        async def start() -> None:
            started.append(1)

        r.schedule("a", 0.01, lock, start)
        await asyncio.wait_for(r.pending["a"].task, 5)
        assert started == [1] and "a" not in r.pending
        r.schedule("b", 30, lock, start)
        assert await r.cancel("b") is True
        assert started == [1] and "b" not in r.pending
        assert await r.cancel("b") is False
        r.schedule("c", 30, lock, start)
        assert await r.shutdown() == ["c"]
        assert started == [1]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_cancel_waits_for_a_start_in_progress() -> None:
    async def main() -> None:
        r, lock = Restarts(), asyncio.Lock()
        gate, done = asyncio.Event(), []

        async def start() -> None:
            await gate.wait()
            done.append(1)

        r.schedule("a", 0, lock, start)
        while not r.pending["a"].starting:
            await asyncio.sleep(0.001)
        waiter = asyncio.ensure_future(r.cancel("a"))
        await asyncio.sleep(0.01)
        assert not waiter.done()  # a start is never cut in half
        gate.set()
        assert await asyncio.wait_for(waiter, 5) is False
        assert done == [1]

    asyncio.run(asyncio.wait_for(main(), 10))


def test_cancel_while_waiting_for_the_lock() -> None:
    async def main() -> None:
        r, lock, started = Restarts(), asyncio.Lock(), []

        async def start() -> None:
            started.append(1)

        async with lock:  # `docker restart` holds the container's lock and stops it
            r.schedule("a", 0, lock, start)
            await asyncio.sleep(0.01)
            assert await r.cancel("a") is True
        await asyncio.sleep(0.01)
        assert started == []

    asyncio.run(asyncio.wait_for(main(), 10))
