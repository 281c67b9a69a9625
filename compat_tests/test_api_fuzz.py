"""A bounded fuzz of the served API (schemathesis over the upstream swagger), against its own daemon.

Every operation in api_spec/endpoints.yaml gets requests generated from the swagger, valid and
invalid (wrong types, missing and extra fields, odd strings), with a fixed seed and a fixed number
of examples, path parameters both random and naming a real container/image. What must hold: no
5xx, errors as JSON, the daemon alive, and afterwards `docker ps -a`, `docker images` and inspect
still work for everything left.

Not fuzzed: operations that block by design (attach, wait: they wait for the container) and the
ones that contact registries (pull, push, login, distribution inspect), which would wait on DNS
and connections here; they have their own tests.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import yaml

from conftest import DRIVERS, require_root
from tests.api_schema import SPEC_PATH, load_endpoints, normalise
from tests.daemon import Daemon, leftover_cgroups, mounts_under

schemathesis = pytest.importorskip("schemathesis")
hypothesis = pytest.importorskip("hypothesis")

SEED = int(os.environ.get("BOCKER_FUZZ_SEED", "20240601"))
EXAMPLES = int(os.environ.get("BOCKER_FUZZ_EXAMPLES", "12"))
# Operations worth more examples: their bodies and queries are large.
MORE_EXAMPLES = {"ContainerCreate": 12 * EXAMPLES, "ContainerList": 4 * EXAMPLES, "ImageList": 4 * EXAMPLES}
EXCLUDED = {
    "ContainerAttach",  # blocks while the container runs
    "ContainerAttachWebsocket",
    "ContainerWait",  # same
    "ExecStart",  # runs for as long as the fuzzed command does
    "SystemEvents",  # streams until `until`, which the fuzz mostly leaves out
    "ContainerStats",  # streams a frame a second unless stream=false
    "ImageCreate",  # pulls from registries
    "ImagePush",
    "SystemAuth",
    "DistributionInspect",
}
REAL = {"id": "fuzz-target", "name": "busybox:latest"}
# Started only by the name of the target container, whose command is `true`: a container the
# fuzz created could run for ever and make stop/kill wait their (fuzzed) timeouts. Random IDs
# still reach other containers through ID prefixes.
ONLY_REAL_ID = {"ContainerStart", "ContainerRestart", "ContainerUnpause"}
TIMEOUT = 30


@schemathesis.serializer("application/x-tar")
def _raw_bytes(ctx: Any, value: Any) -> bytes:
    """Tar bodies (image load): whatever was generated, as bytes; the engine must refuse garbage."""
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def fuzz_daemon(busybox_tar: str) -> Iterator[Daemon]:
    """Its own daemon and data root: the fuzz deletes and renames whatever it finds."""
    require_root()
    d = Daemon(DRIVERS[0], extra_args=["--registry-mirror", "http://127.0.0.1:9", "--registry-mirrors-only"])
    try:
        d.start()
        yield d
        d.clean_containers()
        code = d.stop()
        assert code == 0, f"bockerd exited with {code}:\n{d.log()}"
        assert mounts_under(d.base) == []
        assert leftover_cgroups(d.cgroup_parent) == []
    finally:
        d.cleanup()


def _operations() -> list[Any]:
    with open(SPEC_PATH) as f:
        raw = yaml.safe_load(f)
    schema = schemathesis.openapi.from_dict(raw)
    served = {(e.method.upper(), normalise(e.path)) for e in load_endpoints()}
    out = []
    for result in schema.get_all_operations():
        op = result.ok()
        if (op.method.upper(), normalise(op.path)) in served and op.definition.raw.get("operationId") not in EXCLUDED:
            out.append(op)
    return sorted(out, key=lambda op: (op.path, op.method))


def _send(api: Any, case: Any) -> requests.Response | None:
    # schemathesis drops a base URL with docker-py's "http+docker" scheme: swap it in afterwards.
    kwargs = case.as_transport_kwargs(base_url="http://localhost/v1.44")
    kwargs["url"] = api.base_url + kwargs["url"][len("http://localhost") :]
    try:
        resp: requests.Response = api.request(**kwargs, timeout=TIMEOUT, stream=True)
        # A deadline on the whole answer, not on each read: a stream that keeps sending (a new
        # streaming endpoint nobody excluded) must fail the fuzz, not hang it.
        deadline = time.monotonic() + TIMEOUT
        body = bytearray()
        for chunk in resp.iter_content(1 << 16):
            body += chunk
            if time.monotonic() > deadline:
                resp.close()
                raise requests.exceptions.Timeout(f"{kwargs.get('url')} still streaming after {TIMEOUT} s")
        resp._content = bytes(body)
        return resp
    except (requests.exceptions.InvalidHeader, requests.exceptions.InvalidURL, UnicodeError, ValueError):
        return None  # the client refused to send it (a header with a newline, ...)


def _describe(case: Any) -> str:
    return f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:300]}"


# A dockerd that is not in a swarm answers every swarm operation 503 (api/swarm.py): no failure.
SWARM_PREFIXES = ("/swarm", "/nodes", "/services", "/tasks", "/secrets", "/configs")
# 500s that are dockerd's own answers (its error carries no status, so it is a 500 there too).
DOCKERD_500 = {("POST", "/build"): "Cannot locate specified Dockerfile"}


def _check(case: Any, resp: requests.Response, failures: list[str]) -> None:
    what = _describe(case)
    if resp.status_code == 503 and case.operation.path.startswith(SWARM_PREFIXES):
        if "swarm" not in resp.text:
            failures.append(f"503 without dockerd's swarm message: {resp.text[:200]!r} <- {what}")
    elif resp.status_code == 500 and DOCKERD_500.get((case.method.upper(), case.operation.path), "\0") in resp.text:
        pass
    elif resp.status_code >= 500:
        failures.append(f"{resp.status_code} {resp.text[:300]} <- {what}")
    elif resp.status_code >= 400 and case.method.upper() != "HEAD":  # HEAD answers carry no body
        try:
            body = resp.json()
        except ValueError:
            body = None
        json_error = isinstance(body, dict) and "message" in body
        if resp.headers.get("Content-Type") != "application/json" or not json_error:
            failures.append(f"{resp.status_code} not a JSON error: {resp.text[:200]!r} <- {what}")


def _ensure_targets(dm: Daemon, busybox_tar: str) -> None:
    """The container and image the "real" path parameters name, back if the fuzz removed them."""
    if dm.docker("image", "inspect", REAL["name"]).returncode != 0:
        dm.out("import", "--change", 'CMD ["true"]', busybox_tar, REAL["name"])
    if dm.docker("container", "inspect", REAL["id"]).returncode != 0:
        dm.out("create", "--name", REAL["id"], REAL["name"])


def test_fuzz_served_api(fuzz_daemon: Daemon, busybox_tar: str) -> None:
    dm = fuzz_daemon
    api = dm.api()
    failures: list[str] = []
    sent = 0
    started = time.monotonic()
    GenerationMode = schemathesis.GenerationMode
    for op in _operations():
        op_id = op.definition.raw.get("operationId")
        settings = hypothesis.settings(
            max_examples=MORE_EXAMPLES.get(op_id, EXAMPLES),
            deadline=None,
            database=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
        )
        params = {p: REAL[p] for p in ("id", "name") if "{" + p + "}" in op.path}
        variants: list[dict[str, str]] = ([] if op_id in ONLY_REAL_ID else [{}]) + ([params] if params else [])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            for fixed in variants:
                _ensure_targets(dm, busybox_tar)
                strategy = op.as_strategy(generation_mode=mode, path_parameters=fixed or None)

                @hypothesis.seed(SEED)
                @settings
                @hypothesis.given(strategy)
                def run(case: Any) -> None:
                    nonlocal sent
                    creating = case.operation.definition.raw.get("operationId") == "ContainerCreate"
                    if creating and sent % 2 and isinstance(case.body, dict):
                        # Half of them with an image that exists, so the rest of the body is used.
                        case.body["Image"] = REAL["name"]
                    try:
                        resp = _send(api, case)
                    except requests.exceptions.Timeout:
                        failures.append(f"no answer in {TIMEOUT} s <- {_describe(case)}")
                        return
                    if resp is None:
                        return
                    sent += 1
                    _check(case, resp, failures)
                    assert dm.proc is not None and dm.proc.poll() is None, f"bockerd died:\n{dm.log()}"

                print(f"fuzz: {op_id} {mode.value} {fixed} ({sent} sent, {time.monotonic() - started:.0f} s)")
                try:
                    run()
                except hypothesis.errors.Unsatisfiable:
                    pass  # nothing to make invalid (no parameters, no body)
    api.close()
    elapsed = time.monotonic() - started
    assert sent > 200, f"only {sent} requests sent in {elapsed:.0f} s"
    print(f"fuzz: {sent} requests in {elapsed:.0f} s")
    assert failures == [], "\n".join(failures[:30])

    # Every client still works with whatever the fuzz left behind.
    for cid in dm.out("ps", "-aq", "--no-trunc").split():
        json.loads(dm.out("inspect", cid))
    for iid in set(dm.out("images", "-aq", "--no-trunc").split()):
        json.loads(dm.out("image", "inspect", iid))
    dm.out("ps", "-a", "--size")
    dm.out("images", "-a")
    dm.client.containers.list(all=True)
    dm.client.images.list(all=True)
