"""Generate bocker_engine/api/request_types.json: the JSON types of request bodies, from the swagger.

The daemon checks every JSON body it accepts against the types Go would decode it into (see
bocker_engine/api/validation.py). It cannot parse the 400 KiB swagger at run time (no YAML
dependency, and it would cost half a second), so this reduces the body schemas of every
operation once, to a small JSON file shipped in the package. A unit test checks the file is up
to date; regenerate with `make request-types`.

Node format (compact, read by validation.py):
  "s" string, "b" bool, "n" float64, "i:<go type>" integer (int, int64, uint16, ...), "*" anything,
  "{}" any object, "ss" string or array of strings (Go's strslice.StrSlice),
  {"a": node} array, {"m": node} map with string keys, {"r": name} a definition,
  {"o": go struct name, "p": {field: node}} a struct (unknown fields are ignored, like Go).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC_PATH = os.path.join(ROOT, "api_spec", "upstream", "v1.44.yaml")
OUT_PATH = os.path.join(ROOT, "bocker_engine", "api", "request_types.json")
HTTP_METHODS = ("get", "put", "post", "delete", "head", "patch")

# Go type names where they differ from the swagger definition (they appear in error messages).
GO_NAMES = {"ContainerConfig": "Config"}
# Go struct names of inline body schemas without a title.
BODY_NAMES = {"ContainerCreate": "ContainerConfigWrapper", "ContainerUpdate": "UpdateConfig"}
# Go struct names of inline field schemas without a title (default: the field's name).
INLINE_NAMES = {"Ulimits": "Ulimit", "BlkioWeightDevice": "WeightDevice"}
# Fields that are strslice.StrSlice in Go: a string or an array of strings (the swagger says array).
STRSLICE = {("ContainerConfig", "Cmd"), ("ContainerConfig", "Entrypoint"), ("ContainerConfig", "Shell")}


class _Reducer:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.defs_in: dict[str, Any] = spec["definitions"]
        self.defs_out: dict[str, Any] = {}

    def _ref_name(self, schema: dict[str, Any]) -> str:
        ref = schema["$ref"]
        assert ref.startswith("#/definitions/"), ref
        return str(ref.split("/", 2)[2])

    def _props(self, schema: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
        """(field, schema, definition it comes from) of an object schema, allOf and $ref merged."""
        if "$ref" in schema:
            name = self._ref_name(schema)
            return [(f, s, d or name) for f, s, d in self._props(self.defs_in[name])]
        out: list[tuple[str, dict[str, Any], str]] = []
        for part in schema.get("allOf") or ():
            out += self._props(part)
        out += [(f, s, "") for f, s in (schema.get("properties") or {}).items()]
        return out

    def ref(self, name: str) -> dict[str, str]:
        if name not in self.defs_out:
            self.defs_out[name] = None  # recursion guard
            self.defs_out[name] = self.node(self.defs_in[name], GO_NAMES.get(name, name))
        return {"r": name}

    def node(self, schema: dict[str, Any], name: str) -> Any:
        if "$ref" in schema:
            return self.ref(self._ref_name(schema))
        t = schema.get("type")
        if "allOf" in schema or "properties" in schema:
            name = schema.get("title") or name
            fields: dict[str, Any] = {}
            for field, sub, origin in self._props(schema):
                if (origin, field) in STRSLICE:
                    fields[field] = "ss"
                else:
                    fields[field] = self.node(sub, INLINE_NAMES.get(field, field))
            return {"o": name, "p": fields}
        if t == "object":
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                return {"m": self.node(extra, name)}
            return "{}"
        if t == "array":
            items = schema.get("items")
            return {"a": self.node(items, name) if isinstance(items, dict) else "*"}
        if t == "string":
            return "s"
        if t == "boolean":
            return "b"
        if t == "number":
            return "n"
        if t == "integer":
            return "i:" + (schema.get("format") or "int")
        return "*"


def generate(spec_path: str = SPEC_PATH) -> dict[str, Any]:
    with open(spec_path) as f:
        spec = yaml.safe_load(f)
    r = _Reducer(spec)
    ops: dict[str, Any] = {}
    for item in spec["paths"].values():
        for method, op in item.items():
            if method not in HTTP_METHODS:
                continue
            for param in op.get("parameters") or ():
                schema = param.get("schema")
                if param.get("in") != "body" or not isinstance(schema, dict) or schema.get("type") == "string":
                    continue
                op_id = op["operationId"]
                ops[op_id] = r.node(schema, BODY_NAMES.get(op_id, op_id))
    return {
        "source": "api_spec/upstream/v1.44.yaml, reduced by tests/request_types.py",
        "operations": dict(sorted(ops.items())),
        "definitions": dict(sorted(r.defs_out.items())),
    }


def render(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=None, separators=(",", ":"), sort_keys=False) + "\n"


if __name__ == "__main__":
    with open(OUT_PATH, "w") as f:
        f.write(render(generate()))
    print(f"wrote {OUT_PATH}", file=sys.stderr)
