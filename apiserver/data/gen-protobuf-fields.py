#!/usr/bin/env python3
"""Regenerate protobuf-fields.txt: for every message of the Kubernetes protobuf wire
format, its fields (number, JSON name, type), which `protobuf.rs` uses to turn a
protobuf request body into the object's JSON.

Sources, both published packages:
- the crate `k8s-pb` (Apache-2.0, crates.io): prost code generated from Kubernetes'
  `generated.proto` files, whose `#[prost(...)]` attributes give each field's number and
  wire type and whose Rust types give the message a field holds;
- `k8s-1.32-definitions.json` (see gen-definitions.py): the JSON name of each field.
  prost turns `podIPs` into `pod_i_ps`, so names are matched on their letters and digits
  only. A message-typed field with no JSON property, whose message's properties all
  appear in the parent, is an embedded (`json:",inline"`) struct, as `Probe.handler` is.
  k8s-pb may be newer than 1.32: fields it has that 1.32 lacks keep prost's name, in
  lowerCamelCase.

Output, one line each:
    M <message>                      a message, named as its OpenAPI definition
    <number> <json|-> <type> [rep|map]  a field; `-` marks an inline one; type is a scalar
                                     (string int32 int64 bool bytes double) or a message

    python3 gen-protobuf-fields.py ~/.cargo/registry/src/*/k8s-pb-0.9.0/src k8s-1.32-definitions.json
"""
import json
import os
import re
import sys

STRUCT = re.compile(r"pub struct (\w+) \{(.*?)\n\}", re.S)
FIELD = re.compile(r"#\[prost\(([^\]]*)\)\]\s*pub (?:r#)?(\w+):\s*(.*?),\s*(?=///|#\[|$)", re.S)


def module_prefix(rel):
    """`api/apps/v1` -> `io.k8s.api.apps.v1`."""
    parts = rel.split("/")
    parts = [p.replace("_", "-") if i == 0 else p for i, p in enumerate(parts)]
    return "io.k8s." + ".".join(parts)


def norm(s):
    return re.sub(r"[^a-z0-9]", "", s.lower())


def lower_camel(snake):
    head, *rest = snake.split("_")
    return head + "".join(w[:1].upper() + w[1:] for w in rest)


def resolve(rust_type, module):
    """The message a Rust type names, as `module.Name` with module as a path list."""
    t = re.sub(r"\s+", "", rust_type)
    for wrapper in ("::core::option::Option<", "::prost::alloc::vec::Vec<", "::prost::alloc::boxed::Box<"):
        while t.startswith(wrapper):
            t = t[len(wrapper):-1]
    path = t.split("::")
    mod = list(module)
    while path and path[0] == "super":
        mod.pop()
        path.pop(0)
    return mod + path[:-1], path[-1]


def covered(kind, props, field_types, depth=0):
    """Whether most fields of message `kind` (inline ones expanded) are properties of the
    parent: then it is embedded in the parent's JSON."""
    fields = field_types.get(kind)
    if not fields or depth > 3:
        return False
    hits = sum(
        1
        for _, fname, sub, _ in fields
        if norm(fname) in props or covered(sub, props, field_types, depth + 1)
    )
    return hits * 2 >= len(fields)


def main(src, defs_path):
    defs = json.load(open(defs_path))
    by_norm = {}
    for name in defs:
        prefix, _, short = name.rpartition(".")
        by_norm[(prefix, norm(short))] = name
    messages = {}
    for root, _, files in os.walk(src):
        if "mod.rs" not in files:
            continue
        rel = os.path.relpath(root, src)
        if rel == "." or rel.startswith("metrics"):
            continue
        text = open(os.path.join(root, "mod.rs")).read()
        for sname, body in STRUCT.findall(text):
            messages[(rel, sname)] = FIELD.findall(body.strip())
    names = {}
    for rel, sname in messages:
        prefix = module_prefix(rel)
        names[(rel, sname)] = by_norm.get((prefix, norm(sname)), prefix + "." + sname)
    resolved = {}
    for (rel, sname), fields in messages.items():
        rows = resolved[(rel, sname)] = []
        for attr, fname, rtype in fields:
            tag = re.search(r'tag = "(\d+)"', attr).group(1)
            kind = attr.split(",")[0].strip()
            label = "rep" if "repeated" in attr else ""
            if kind.startswith("btree_map"):
                label = "map"
                kind = re.search(r'"string, (\w+)"', attr).group(1)
            if kind == "bytes = \"vec\"":
                kind = "bytes"
            if kind == "message":
                inner = rtype.split("BTreeMap<")[-1]
                if label == "map":
                    inner = inner.split(",", 1)[1].rsplit(">", 1)[0].strip().rstrip(",")
                mod, msg = resolve(inner, rel.split("/"))
                key = ("/".join(mod), msg)
                kind = names.get(key, module_prefix("/".join(mod)) + "." + msg)
            rows.append((tag, fname, kind, label))
    field_types = {names[k]: v for k, v in resolved.items()}
    out = []
    for key in sorted(resolved, key=lambda k: names[k]):
        full = names[key]
        props = {norm(p): p for p in defs.get(full, {}).get("properties", {})}
        out.append("M " + full)
        for tag, fname, kind, label in resolved[key]:
            json_name = props.get(norm(fname))
            if json_name is None:
                if label == "" and covered(kind, props, field_types):
                    json_name = "-"
                else:
                    json_name = lower_camel(fname)
            out.append(" ".join(x for x in (tag, json_name, kind, label) if x))
    sys.stdout.write("\n".join(out) + "\n")


main(sys.argv[1], sys.argv[2])
