#!/usr/bin/env python3
"""Regenerate k8s-1.32-definitions.json: the OpenAPI (swagger 2.0) definitions of the
Kubernetes 1.32 API, which the API server serves at /openapi/v2 and /openapi/v3.

Source: the PyPI package `kubernetes-validate` (Apache-2.0), which ships each release's
definitions as JSON Schema (`kubernetes-json-schema/v1.32.0-local/_definitions.json`).
That form differs from the swagger document only mechanically, and this script undoes it:
nullable types (`["string", "null"]`) become plain types, `#/$defs/` references become
`#/definitions/`, the `oneOf` of Quantity and IntOrString becomes the swagger form
(`type: string` with `format: int-or-string` for IntOrString), and the single-value enums
it adds to `apiVersion` and `kind` are dropped.

    pip download --no-deps kubernetes-validate==1.37.0 && unzip kubernetes_validate-*.whl
    python3 gen-definitions.py kubernetes_validate/kubernetes-json-schema/v1.32.0-local/_definitions.json
"""
import json
import sys

QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
DESCRIPTIONS = {
    QUANTITY: "Quantity is a fixed-point representation of a number. It provides convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.",
    INT_OR_STRING: "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number.",
}


def convert(node, key=None):
    if isinstance(node, list):
        return [convert(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for k, v in node.items():
        if k == "type" and isinstance(v, list):
            v = [t for t in v if t != "null"]
            v = v[0] if len(v) == 1 else v
        elif k == "$ref":
            v = v.replace("#/$defs/", "#/definitions/")
        elif k == "properties":
            v = {name: convert(p, name) for name, p in v.items()}
            for name in ("apiVersion", "kind"):
                if name in v and len(v[name].get("enum", [])) == 1:
                    del v[name]["enum"]
            out[k] = v
            continue
        out[k] = convert(v)
    return out


def main(path):
    defs = json.load(open(path))["$defs"]
    out = {}
    for name, schema in sorted(defs.items()):
        schema = convert(schema)
        if name == QUANTITY:
            schema = {"description": DESCRIPTIONS[name], "type": "string"}
        elif name == INT_OR_STRING:
            schema = {"description": DESCRIPTIONS[name], "type": "string", "format": "int-or-string"}
        out[name] = schema
    json.dump(out, sys.stdout, separators=(",", ":"), sort_keys=True)


main(sys.argv[1])
