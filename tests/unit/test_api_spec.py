"""api_spec/endpoints.yaml against the app's routes and the upstream swagger; the schema validator."""

from __future__ import annotations

from typing import Any, cast

import pytest
import yaml

from bocker_engine.api.app import create_app
from bocker_engine.api.backend import Backend
from tests.api_schema import (
    CATCH_ALL_ROUTE,
    ENDPOINTS_PATH,
    ApiSchema,
    Endpoint,
    api_schema,
    check_recording,
    load_endpoints,
    normalise,
)

VERSIONED_PREFIX = "/v{api_version}"


class _NoDaemon:
    """Routes are registered without touching the daemon."""


@pytest.fixture(scope="module")
def schema() -> ApiSchema:
    return api_schema()


@pytest.fixture(scope="module")
def endpoints() -> list[Endpoint]:
    return load_endpoints()


def _app_routes() -> set[tuple[str, str]]:
    app = create_app(cast(Backend, _NoDaemon()))
    routes: set[tuple[str, str]] = set()
    for route in app.router.routes():
        canonical = route.resource.canonical if route.resource is not None else ""
        if canonical.startswith(VERSIONED_PREFIX) or canonical == CATCH_ALL_ROUTE:
            continue
        routes.add((route.method.upper(), normalise(canonical)))
    return routes


def test_endpoints_file_is_well_formed(endpoints: list[Endpoint]) -> None:
    with open(ENDPOINTS_PATH) as f:
        raw = yaml.safe_load(f)
    assert raw["api_version"] == "1.44"
    for entry in raw["endpoints"]:
        assert set(entry) == {"method", "path", "operationId", "status"}, entry
    keys = [(e.path, e.method) for e in endpoints]
    assert keys == sorted(keys), "api_spec/endpoints.yaml must be sorted by path, then method"
    assert len(set(keys)) == len(keys), "duplicate entries in api_spec/endpoints.yaml"
    for e in endpoints:
        assert e.method == e.method.upper(), e
        assert e.status == "full" or (e.status.startswith("partial: ") and len(e.status) > 9), e


def test_every_route_is_listed_and_every_listed_endpoint_is_served(endpoints: list[Endpoint]) -> None:
    served = _app_routes()
    listed = {(e.method.upper(), normalise(e.path)) for e in endpoints}
    assert sorted(served - listed) == [], "routes missing from api_spec/endpoints.yaml"
    assert sorted(listed - served) == [], "api_spec/endpoints.yaml lists routes the app does not serve"


def test_every_listed_endpoint_is_in_the_upstream_swagger(schema: ApiSchema, endpoints: list[Endpoint]) -> None:
    problems = []
    for e in endpoints:
        op = schema.operation(e.method, e.path)
        if op is None:
            problems.append(f"{e.method} {e.path}: not in upstream v1.44")
        elif op.path != e.path or op.operation_id != e.operation_id:
            problems.append(f"{e.method} {e.path} {e.operation_id}: upstream is {op.path} {op.operation_id}")
    assert problems == []


# ---- the validator -------------------------------------------------------------------------


def _where(schema: ApiSchema, method: str, route: str, status: int, body: Any) -> list[tuple[str, str]]:
    return [(m.where, m.message) for m in schema.validate(method, route, status, body)]


def test_normalise() -> None:
    assert normalise("/images/{name:.+}/json") == "/images/{}/json"
    assert normalise("/v{api_version:[0-9]+\\.[0-9]{1,2}}/x/{id}") == "/v{}/x/{}"
    assert normalise("/containers/json") == "/containers/json"


def test_known_good_bodies_pass(schema: ApiSchema) -> None:
    assert _where(schema, "POST", "/containers/create", 201, {"Id": "a" * 64, "Warnings": []}) == []
    assert (
        _where(
            schema,
            "GET",
            "/containers/{id}/json",
            200,
            {
                "Id": "a" * 64,
                "Created": "2024-05-01T10:00:00.123456789Z",
                "Name": "/web",
                "RestartCount": 0,
                "State": {"Status": "running", "Running": True, "Pid": 42, "ExitCode": 0, "Health": None},
                "HostConfig": {"Memory": 0, "PortBindings": {"80/tcp": None}, "CgroupnsMode": "private"},
                "Config": {"Labels": {"k": "v"}, "ExposedPorts": {"80/tcp": {}}, "Cmd": ["sh"]},
            },
        )
        == []
    )
    assert _where(schema, "GET", "/images/{name}/json", 200, {"Id": "sha256:" + "b" * 64, "Size": 1}) == []
    assert (
        _where(
            schema,
            "GET",
            "/version",
            200,
            {
                "Version": "0.1.0",
                "ApiVersion": "1.44",
                "Components": [{"Name": "Engine", "Version": "0.1.0", "Details": {"Os": "linux"}}],
            },
        )
        == []
    )


def test_wrong_types_fail(schema: ApiSchema) -> None:
    assert _where(schema, "GET", "/containers/{id}/json", 200, {"State": {"Pid": "42"}}) == [
        ("$.State.Pid", '"42" is not of type integer')
    ]
    assert _where(schema, "GET", "/containers/{id}/json", 200, {"HostConfig": {"Memory": 1.0}}) == [
        ("$.HostConfig.Memory", "1.0 is not of type integer")
    ]
    assert _where(schema, "GET", "/containers/json", 200, [{"Created": True}]) == [
        ("$[0].Created", "true is not of type integer")
    ]
    assert _where(schema, "GET", "/containers/{id}/json", 200, {"State": {"Status": "up"}})[0][0] == "$.State.Status"
    # RFC 3339 where Go decodes into time.Time (and all other dateTime fields)
    assert _where(schema, "GET", "/images/{name}/json", 200, {"Metadata": {"LastTagTime": "2024-05-01 10:00:00"}}) == [
        ("$.Metadata.LastTagTime", '"2024-05-01 10:00:00" is not a valid dateTime')
    ]


def test_go_nulls(schema: ApiSchema) -> None:
    # not required: null passes (a Go nil slice/map/pointer)
    assert _where(schema, "GET", "/containers/{id}/json", 200, {"Mounts": None, "Config": {"Env": None}}) == []
    # x-nullable
    assert _where(schema, "GET", "/images/{name}/json", 200, {"Metadata": {"LastTagTime": None}}) == []
    # required and not x-nullable: null fails
    assert _where(schema, "POST", "/containers/create", 201, {"Id": "x", "Warnings": None}) == [
        ("$.Warnings", "null is not of type array")
    ]
    # explicitly x-nullable: false
    assert _where(schema, "GET", "/volumes", 200, {"Volumes": [{"UsageData": {"Size": None, "RefCount": 1}}]})[-1] == (
        "$.Volumes[0].UsageData.Size",
        "null is not of type integer",
    )
    # a nil slice as the whole body where the schema is an array; but not where it is an object
    assert _where(schema, "GET", "/containers/{id}/changes", 200, None) == []
    assert _where(schema, "GET", "/info", 200, None) == [("$", "null is not of type object")]


def test_statuses(schema: ApiSchema) -> None:
    assert _where(schema, "GET", "/containers/{id}/json", 404, {"message": "No such container: x"}) == []
    assert _where(schema, "POST", "/containers/{id}/start", 400, {"message": "bad"}) == []  # undocumented 4xx
    assert _where(schema, "GET", "/containers/{id}/json", 404, {"msg": "x"}) == [
        ("$", "'message' is a required property")
    ]
    assert _where(schema, "GET", CATCH_ALL_ROUTE, 404, {"message": "page not found"}) == []
    assert _where(schema, "POST", "/containers/{id}/start", 204, None) == []  # no schema: skipped
    assert _where(schema, "POST", "/containers/{id}/start", 200, {}) == [
        ("$", "status 200 is not documented for ContainerStart")
    ]
    assert _where(schema, "GET", "/nosuch", 200, {}) == [("$", "no such operation in the upstream API")]


def test_check_recording_reports_unlisted_routes_and_undocumented_fields(schema: ApiSchema) -> None:
    endpoints = [Endpoint("GET", "/containers/{id}/json", "ContainerInspect", "full")]
    entries = [
        {"method": "GET", "route": "/containers/{id}/json", "status": 200, "body": {"Id": "x", "Bogus": 1}},
        {"method": "GET", "route": "/containers/{name}/json", "status": 200, "body": {"Id": 1}},
        {"method": "GET", "route": "/info", "status": 200, "body": {}},
        {"method": "GET", "route": CATCH_ALL_ROUTE, "status": 404, "body": {"message": "page not found"}},
    ]
    mismatches, unlisted, undocumented = check_recording(entries, schema, endpoints)
    assert [(m.route, m.where) for m in mismatches] == [("/containers/{name}/json", "$.Id")]
    assert unlisted == ["GET /info"]
    assert undocumented == {"GET /containers/{id}/json -> 200: $.Bogus"}
