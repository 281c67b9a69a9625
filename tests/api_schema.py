"""Validate recorded API responses against the upstream Docker Engine API swagger (v1.44).

Test tooling only; the product never imports this. The swagger (Swagger 2.0) is turned into a
JSON-Schema Draft 4 document and each response body is validated against the response schema of
the swagger operation that matches the recorded (method, route, status).

How Swagger 2 maps to Draft 4 here:

- `$ref: "#/definitions/X"`: resolved inside the swagger document (a `referencing` registry holds
  the whole document under SPEC_URI; a response schema is addressed by JSON pointer into it).
- `x-nullable: true`: null is also allowed there (`type` gains "null", `enum` gains null).
- `type: "file"` (binary downloads): no constraint.
- `additionalProperties`: as in Draft 4. Undeclared properties are *not* errors (the swagger leaves
  out many fields dockerd sends, and Go clients ignore unknown fields); `undocumented()` lists them
  separately, for information.
- `format`: checked where a Go client would fail to decode: RFC 3339 for `dateTime`/`date-time`
  strings (when not empty), value ranges for `int64` and `uint8/16/32/64` integers.
- Types are strict: Draft 4 semantics, so `1.0` is not an integer and `true` is not a number.

Leniency for Go nulls (documented deviation from the swagger): dockerd serialises nil slices,
maps and pointers as `null` for many fields the swagger does not mark `x-nullable`. So a property
whose value is null passes when the property is not listed in its object's `required` and its own
schema does not say `x-nullable: false`. A top-level body of null passes where the response schema
is an array (a Go nil slice: dockerd answers `null` e.g. for /containers/{id}/changes with no
changes). Everywhere else null is a type error.

Gaps of the swagger filled in: HostConfig.LogConfig.Type also allows "local" (dockerd's driver).

Status codes: bodies of 4xx/5xx responses must match `ErrorResponse` ({"message": string}), whether
or not the swagger lists that status for the operation (it is incomplete there; dockerd itself
answers e.g. 400 on start). A 1xx-3xx status the operation does not document is a mismatch.
A documented status without a schema (204, 304, 201 on tag, ...) is skipped.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import yaml
from jsonschema import Draft4Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry
from referencing.jsonschema import DRAFT4

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_PATH = os.path.join(ROOT, "api_spec", "upstream", "v1.44.yaml")
ENDPOINTS_PATH = os.path.join(ROOT, "api_spec", "endpoints.yaml")
SPEC_URI = "urn:bocker-engine:docker-engine-api:v1.44"
ERROR_SCHEMA_REF = "#/definitions/ErrorResponse"
CATCH_ALL_ROUTE = "/{tail}"  # create_app's unknown-route handler: not an endpoint, answers 404 JSON
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch")


def normalise(path: str) -> str:
    """Replace every `{...}` placeholder (any name, any aiohttp regex, nested braces) by `{}`."""
    out: list[str] = []
    depth = 0
    for ch in path:
        if ch == "{":
            if depth == 0:
                out.append("{}")
            depth += 1
        elif ch == "}" and depth:
            depth -= 1
        elif depth == 0:
            out.append(ch)
    return "".join(out)


@dataclass(frozen=True, order=True)
class Mismatch:
    method: str
    route: str
    status: int
    where: str  # JSON path inside the body, "$" for the body itself
    message: str

    def __str__(self) -> str:
        return f"{self.method} {self.route} -> {self.status}: {self.where}: {self.message}"


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    path: str  # swagger path template
    operation_id: str
    pointer: str  # JSON pointer of the operation object inside the swagger document
    responses: Mapping[str, Any]  # status code (str) or "default" -> response object


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str
    operation_id: str
    status: str


# ---- swagger 2 -> draft 4 ------------------------------------------------------------------


def _to_draft4(node: Any) -> Any:
    """A copy of the swagger document with the Swagger-only schema keywords made Draft 4."""
    if isinstance(node, list):
        return [_to_draft4(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {str(k): _to_draft4(v) for k, v in node.items()}
    if out.get("type") == "file":
        del out["type"]
    if out.get("x-nullable") is True:
        if "$ref" in out:  # Draft 4 ignores $ref siblings: wrap instead
            ref = {"$ref": out.pop("$ref")}
            out["anyOf"] = [{"type": "null"}, ref]
        elif isinstance(out.get("type"), str):
            out["type"] = [out["type"], "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _str_keys(node: Any) -> Any:
    """YAML reads response codes as ints; JSON pointers and JSON Schema need string keys."""
    if isinstance(node, list):
        return [_str_keys(v) for v in node]
    if isinstance(node, dict):
        return {str(k): _str_keys(v) for k, v in node.items()}
    return node


def _json_pointer(*parts: str) -> str:
    return "".join("/" + p.replace("~", "~0").replace("/", "~1") for p in parts)


def _properties(
    validator: Any, properties: Mapping[str, Any], instance: Any, schema: Mapping[str, Any]
) -> Iterator[ValidationError]:
    """Draft 4 `properties`, with the Go-null leniency described in the module docstring."""
    if not validator.is_type(instance, "object"):
        return
    required = set(schema.get("required", ()))
    for name, subschema in properties.items():
        if name not in instance:
            continue
        value = instance[name]
        if value is None and name not in required and subschema.get("x-nullable") is not False:
            continue
        yield from validator.descend(value, subschema, path=name, schema_path=name)


_GoValidator = validators.extend(Draft4Validator, {"properties": _properties})

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]\d{2}:\d{2})$")


def _format_checker() -> FormatChecker:
    checker = FormatChecker(formats=())

    def rfc3339(value: object) -> bool:
        if not isinstance(value, str) or value == "":
            return True
        if not _RFC3339.match(value):
            return False
        try:
            datetime.fromisoformat(re.sub(r"\.\d+", "", value).replace("Z", "+00:00"))
        except ValueError:
            return False
        return True

    checker.checks("dateTime")(rfc3339)
    checker.checks("date-time")(rfc3339)

    def int_range(lo: int, hi: int) -> Any:
        def check(value: object) -> bool:
            if not isinstance(value, int) or isinstance(value, bool):
                return True
            return lo <= value <= hi

        return check

    checker.checks("int64")(int_range(-(1 << 63), (1 << 63) - 1))
    for bits in (8, 16, 32, 64):
        checker.checks(f"uint{bits}")(int_range(0, (1 << bits) - 1))
    return checker


def _json_path(parts: Iterable[Any]) -> str:
    out = "$"
    for p in parts:
        out += (
            f"[{p}]"
            if isinstance(p, int)
            else (f".{p}" if re.fullmatch(r"[A-Za-z_][\w-]*", str(p)) else f"[{json.dumps(p)}]")
        )
    return out


def _short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _describe(error: ValidationError) -> tuple[str, str]:
    if error.context:  # anyOf/oneOf: report the branch that came closest
        inner = best_match(error.context)
        if inner is not None:
            return _describe(inner)
    where = _json_path(error.absolute_path)
    v = error.validator
    if v == "type":
        return where, f"{_short(error.instance)} is not of type {error.validator_value}"
    if v == "format":
        return where, f"{_short(error.instance)} is not a valid {error.validator_value}"
    if v == "enum":
        return where, f"{_short(error.instance)} is not one of {_short(error.validator_value, 200)}"
    if v == "required":
        return where, error.message
    msg = error.message
    return where, msg if len(msg) <= 200 else msg[:197] + "..."


# ---- the schema ----------------------------------------------------------------------------


class ApiSchema:
    def __init__(self, spec_path: str = SPEC_PATH) -> None:
        with open(spec_path) as f:
            raw = yaml.safe_load(f)
        self.raw: dict[str, Any] = _str_keys(raw)
        self.doc: dict[str, Any] = _to_draft4(self.raw)
        # The swagger's LogConfig.Type enum omits dockerd's `local` driver (dockerd answers it).
        log_type = self.doc["definitions"]["HostConfig"]["allOf"][1]["properties"]["LogConfig"]["properties"]["Type"]
        log_type["enum"] = [*log_type["enum"], "local"]
        self.definitions: dict[str, Any] = self.raw["definitions"]
        self.registry: Registry[Any] = Registry().with_resource(SPEC_URI, DRAFT4.create_resource(self.doc))
        self.format_checker = _format_checker()
        self.operations: dict[tuple[str, str], Operation] = {}
        for path, item in self.raw["paths"].items():
            for method, op in item.items():
                if method not in HTTP_METHODS:
                    continue
                responses = dict(op.get("responses") or {})
                self.operations[(method.upper(), normalise(path))] = Operation(
                    method.upper(), path, op.get("operationId", ""), _json_pointer("paths", path, method), responses
                )

    def operation(self, method: str, route: str) -> Operation | None:
        return self.operations.get((method.upper(), normalise(route)))

    def _validator(self, pointer: str) -> Any:
        schema = {"$ref": SPEC_URI + "#" + quote(pointer, safe="/~")}
        return _GoValidator(schema, registry=self.registry, format_checker=self.format_checker)

    def _deref(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        while "$ref" in schema:
            ref = schema["$ref"]
            assert ref.startswith("#/definitions/"), ref
            schema = self.definitions[ref.split("/", 2)[2]]
        return schema

    def response_schema(self, method: str, route: str, status: int) -> tuple[str | None, str | None]:
        """(JSON pointer of the response schema or None to skip, mismatch message or None)."""
        if status >= 400:
            return "/definitions/ErrorResponse", None
        op = self.operation(method, route)
        if op is None:
            return None, "no such operation in the upstream API"
        key = str(status) if str(status) in op.responses else "default"
        response = op.responses.get(key)
        if response is None:
            return None, f"status {status} is not documented for {op.operation_id}"
        if "schema" not in response:
            return None, None
        return op.pointer + _json_pointer("responses", key, "schema"), None

    def _resolve_pointer(self, pointer: str) -> Mapping[str, Any]:
        node: Any = self.raw
        for part in pointer.lstrip("/").split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            node = node[int(part)] if part.isdigit() and isinstance(node, list) else node[part]
        return self._deref(node)

    def validate(self, method: str, route: str, status: int, body: Any) -> list[Mismatch]:
        """Every problem of `body` as the response to (method, route) with `status`; [] if none."""
        pointer, problem = self.response_schema(method, route, status)
        if problem is not None:
            return [Mismatch(method, route, status, "$", problem)]
        if pointer is None:
            return []
        if body is None and self._resolve_pointer(pointer).get("type") == "array":
            return []  # a Go nil slice
        out: set[Mismatch] = set()
        for error in self._validator(pointer).iter_errors(body):
            where, message = _describe(error)
            out.add(Mismatch(method, route, status, where, message))
        return sorted(out)

    # ---- informational: fields the swagger does not describe ----------------------------

    def _object_shape(self, schema: Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
        """Declared properties (allOf merged) and additionalProperties of an object schema."""
        schema = self._deref(schema)
        props: dict[str, Any] = dict(schema.get("properties") or {})
        additional: Any = schema.get("additionalProperties")
        for part in schema.get("allOf") or ():
            p, a = self._object_shape(part)
            props.update(p)
            additional = additional if additional is not None else a
        return props, additional

    def _walk(self, value: Any, schema: Mapping[str, Any], path: list[Any], out: list[str]) -> None:
        schema = self._deref(schema)
        if isinstance(value, dict):
            props, additional = self._object_shape(schema)
            for k, v in value.items():
                if k in props:
                    self._walk(v, props[k], [*path, k], out)
                elif isinstance(additional, dict):
                    self._walk(v, additional, [*path, k], out)
                elif props and additional is None:
                    out.append(_json_path([*path, k]))
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, v in enumerate(value):
                self._walk(v, schema["items"], [*path, i], out)

    def undocumented(self, method: str, route: str, status: int, body: Any) -> list[str]:
        """JSON paths (array indexes as [*]) of properties the response schema does not declare."""
        pointer, problem = self.response_schema(method, route, status)
        if pointer is None or problem is not None:
            return []
        out: list[str] = []
        self._walk(body, self._resolve_pointer(pointer), [], out)
        return sorted({re.sub(r"\[\d+\]", "[*]", p) for p in out})


@cache
def api_schema() -> ApiSchema:
    return ApiSchema()


# ---- api_spec/endpoints.yaml and recordings ------------------------------------------------


def load_endpoints(path: str = ENDPOINTS_PATH) -> list[Endpoint]:
    with open(path) as f:
        data = yaml.safe_load(f)
    return [Endpoint(e["method"], e["path"], e["operationId"], e["status"]) for e in data["endpoints"]]


def endpoint_keys(endpoints: Iterable[Endpoint]) -> set[tuple[str, str]]:
    return {(e.method.upper(), normalise(e.path)) for e in endpoints}


def read_recording(path: str) -> list[dict[str, Any]]:
    """The entries of one BOCKER_API_RECORD file (one JSON object a line)."""
    entries: list[dict[str, Any]] = []
    with open(path) as f:
        for line in f:
            if line.strip():
                entries.append(json.loads(line))
    return entries


def check_recording(
    entries: Iterable[Mapping[str, Any]], schema: ApiSchema, endpoints: Iterable[Endpoint]
) -> tuple[list[Mismatch], list[str], set[str]]:
    """(schema mismatches, routes not in endpoints.yaml, undocumented fields), all deduplicated."""
    served = endpoint_keys(endpoints)
    mismatches: set[Mismatch] = set()
    unlisted: set[str] = set()
    undocumented: set[str] = set()
    for e in entries:
        method, route, status, body = e["method"], e["route"], int(e["status"]), e["body"]
        if route != CATCH_ALL_ROUTE and (method.upper(), normalise(route)) not in served:
            unlisted.add(f"{method} {route}")
        mismatches.update(schema.validate(method, route, status, body))
        undocumented.update(
            f"{method} {route} -> {status}: {p}" for p in schema.undocumented(method, route, status, body)
        )
    return sorted(mismatches), sorted(unlisted), undocumented
