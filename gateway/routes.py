"""What the gateway config derives from the descriptor set, so that nothing in it repeats the
protos: the REST path templates (the request guard names a path field by them) and the
streaming rpcs (routed onto their own upstream connections)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import descriptor_pb2

from service.openapi import Descriptors

_VARIABLE = re.compile(r"^\{([A-Za-z0-9_.]+)(?:=\*)?\}$")


def _load(descriptor_path: Path) -> descriptor_pb2.FileDescriptorSet:
    # service.openapi imports google.api.annotations, so the http option parses as an extension.
    return descriptor_pb2.FileDescriptorSet.FromString(Path(descriptor_path).read_bytes())


def _camel(name: str) -> str:
    """A proto field path as the REST JSON names it: `tenant_id` -> `tenantId`."""
    return ".".join(
        re.sub(r"_([a-z0-9])", lambda m: m.group(1).upper(), p) for p in name.split(".")
    )


def http_bindings(descriptor_path: Path, services: Iterable[str]) -> list[tuple[str, str]]:
    """Every google.api.http binding of `services` (full names) as (HTTP method, path
    template), additional bindings included, in declaration order."""
    wanted = set(services)
    return [
        (binding.verb.upper(), binding.template)
        for binding in Descriptors(_load(descriptor_path)).bindings()
        if binding.service in wanted
    ]


def path_templates(descriptor_path: Path, services: Iterable[str]) -> list[str]:
    """Every path template of `services`, once each, in declaration order."""
    return list(dict.fromkeys(t for _, t in http_bindings(descriptor_path, services)))


def streaming_rpcs(descriptor_path: Path, package_prefix: str = "eventmgmt.") -> list[str]:
    """The gRPC paths (`/pkg.Service/Method`) of every client- or server-streaming rpc."""
    paths = []
    for file in _load(descriptor_path).file:
        if not file.package.startswith(package_prefix):
            continue
        for service in file.service:
            for method in service.method:
                if method.client_streaming or method.server_streaming:
                    paths.append(f"/{file.package}.{service.name}/{method.name}")
    return paths


def lua_path_templates(templates: Iterable[str]) -> str:
    """The request guard's PATH_TEMPLATES table: each template a list of segments, a literal
    as its text and a single-segment variable as {field = "<REST name>"}. Templates with
    multi-segment variables (`{name=**}`) are left out: their values are named `path`."""
    rows = []
    for template in templates:
        parts = []
        for segment in (s for s in template.split("/") if s):
            variable = _VARIABLE.match(segment)
            if variable is not None:
                parts.append(f"{{field = {json.dumps(_camel(variable.group(1)))}}}")
            elif "{" in segment:
                break
            else:
                parts.append(json.dumps(segment))
        else:
            rows.append("  {" + ", ".join(parts) + "},")
    return "local PATH_TEMPLATES = {\n" + "\n".join(rows) + "\n}\n"


def _segments(template: str) -> list[str | None]:
    """A template's segments: a literal as its text, a one-segment variable as None, and a
    multi-segment one (`{name=**}`, always last) as "**"."""
    parts: list[str | None] = []
    for segment in (s for s in template.split("/") if s):
        if _VARIABLE.match(segment):
            parts.append(None)
        elif segment.startswith("{"):
            parts.append("**")
        else:
            parts.append(segment)
    return parts


def _regex(template: str, parts: list[str | None]) -> str:
    if "{" not in template:
        return re.escape(template)
    pieces = []
    for part in parts:
        if part is None:
            pieces.append("/[^/]+")
        elif part == "**":
            pieces.append("/.+")
        else:
            pieces.append("/" + re.escape(part))
    return "".join(pieces)


def method_not_allowed(
    bindings: Iterable[tuple[str, str]],
) -> list[tuple[str, str | None, list[str]]]:
    """For every path template, (a regex of its paths, the path itself when the template has no
    variable, the methods bound on it): a request on
    such a path with another method is answered 405 with `Allow` naming those, as the OpenAPI
    document lists them. Templates with fewer variables come first, so that a path finds the
    row of its most literal template (`/events/find` before `/events/{id}`, although a GET of
    `/events/find` is transcoded as `/events/{id}`'s and never reaches these routes)."""
    methods: dict[str, set[str]] = {}
    for verb, template in bindings:
        methods.setdefault(template, set()).add(verb)
    parts = {template: _segments(template) for template in methods}
    rows = []
    for template in sorted(methods, key=lambda t: sum(p is None or p == "**" for p in parts[t])):
        literal = template if "{" not in template else None
        rows.append((_regex(template, parts[template]), literal, sorted(methods[template])))
    return rows
