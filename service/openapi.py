"""The OpenAPI 3.1 document of the REST gateway, derived from the protos.

Paths, methods, path and query parameters, typed bodies and descriptions come from the
`google.api.http` annotations (every binding, `additional_bindings` included) and the
comments in the descriptor set; what an annotation cannot say (the JSON inside an HttpBody,
the HTTP statuses the service chooses) comes from `service.rest_schemas`. `make generate`
writes gateway/openapi.json, which the gateway serves; `make lint` fails when it is stale.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.api import annotations_pb2, field_behavior_pb2, http_pb2
from google.protobuf import descriptor_pb2

from service import rest_schemas
from service.privileges import access_for

REPO = Path(__file__).resolve().parent.parent
OPENAPI_JSON = REPO / "gateway" / "openapi.json"
HTTP_BODY = ".google.api.HttpBody"
# The option extensions; their stubs type them as plain field descriptors.
_HTTP_RULE: Any = annotations_pb2.http
_FIELD_BEHAVIOR: Any = field_behavior_pb2.field_behavior
_FIELD = descriptor_pb2.FieldDescriptorProto
_METHODS = ("get", "put", "post", "delete", "patch")
# Where source_code_info keeps comments: FileDescriptorProto.message_type = 4,
# DescriptorProto.field = 2, .nested_type = 3, .enum_type = 4, service = 6, method = 2.
_MESSAGE, _FIELD_NO, _NESTED, _ENUM, _SERVICE, _METHOD = 4, 2, 3, 4, 6, 2
_SCALARS: dict[int, dict[str, Any]] = {
    _FIELD.TYPE_STRING: {"type": "string"},
    _FIELD.TYPE_BOOL: {"type": "boolean"},
    _FIELD.TYPE_INT32: {"type": "integer", "format": "int32"},
    _FIELD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    _FIELD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    _FIELD.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    _FIELD.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # The proto3 JSON mapping prints 64-bit integers as strings and reads both forms.
    _FIELD.TYPE_INT64: {"type": ["string", "integer"], "format": "int64"},
    _FIELD.TYPE_SINT64: {"type": ["string", "integer"], "format": "int64"},
    _FIELD.TYPE_SFIXED64: {"type": ["string", "integer"], "format": "int64"},
    _FIELD.TYPE_UINT64: {"type": ["string", "integer"], "format": "int64"},
    _FIELD.TYPE_FIXED64: {"type": ["string", "integer"], "format": "int64"},
    _FIELD.TYPE_DOUBLE: {"type": "number"},
    _FIELD.TYPE_FLOAT: {"type": "number"},
    _FIELD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
}
# Well-known types have their own JSON forms in the proto3 mapping.
_WELL_KNOWN: dict[str, dict[str, Any]] = {
    ".google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    ".google.protobuf.Duration": {"type": "string", "pattern": r"^-?\d+(\.\d+)?s$"},
    ".google.protobuf.Struct": {"type": "object"},
    ".google.protobuf.Value": {},
    ".google.protobuf.ListValue": {"type": "array"},
    ".google.protobuf.Empty": {"type": "object"},
    ".google.protobuf.FieldMask": {"type": "string"},
    ".google.protobuf.Any": {"type": "object", "properties": {"@type": {"type": "string"}}},
    ".google.protobuf.StringValue": {"type": "string"},
    ".google.protobuf.BoolValue": {"type": "boolean"},
    ".google.protobuf.Int32Value": {"type": "integer"},
    ".google.protobuf.DoubleValue": {"type": "number"},
}


@dataclass(frozen=True)
class Binding:
    """One REST binding of an rpc: a method, a path template and what the body carries."""

    service: str
    method: descriptor_pb2.MethodDescriptorProto
    verb: str
    template: str
    body: str
    index: int

    @property
    def rpc(self) -> str:
        return f"{self.service}.{self.method.name}"

    @property
    def operation_id(self) -> str:
        # Each additional binding (another base path) is its own operation.
        return self.method.name if self.index == 0 else f"{self.method.name}_{self.index + 1}"

    @property
    def path_fields(self) -> list[str]:
        return re.findall(r"\{([a-z0-9_.]+)(?:=[^}]*)?\}", self.template)


class Descriptors:
    """The messages, enums, services and comments of a descriptor set, by full name."""

    def __init__(self, files: descriptor_pb2.FileDescriptorSet) -> None:
        self.messages: dict[str, descriptor_pb2.DescriptorProto] = {}
        self.enums: dict[str, descriptor_pb2.EnumDescriptorProto] = {}
        self.services: list[tuple[str, descriptor_pb2.ServiceDescriptorProto]] = []
        self.comments: dict[str, str] = {}
        for file in files.file:
            by_path = {
                tuple(loc.path): loc.leading_comments for loc in file.source_code_info.location
            }
            package = f".{file.package}" if file.package else ""
            for i, message in enumerate(file.message_type):
                self._add_message(f"{package}.{message.name}", message, (_MESSAGE, i), by_path)
            for enum in file.enum_type:
                self.enums[f"{package}.{enum.name}"] = enum
            for i, service in enumerate(file.service):
                name = f"{file.package}.{service.name}"
                self.services.append((name, service))
                for j, method in enumerate(service.method):
                    self._comment(f"{name}.{method.name}", by_path, (_SERVICE, i, _METHOD, j))

    def _comment(
        self, name: str, by_path: dict[tuple[int, ...], str], path: tuple[int, ...]
    ) -> None:
        text = by_path.get(path, "")
        if text:
            self.comments[name] = " ".join(line.strip() for line in text.strip().splitlines())

    def _add_message(
        self,
        name: str,
        message: descriptor_pb2.DescriptorProto,
        path: tuple[int, ...],
        by_path: dict[tuple[int, ...], str],
    ) -> None:
        self.messages[name] = message
        # Comments go by full name without the leading dot, as methods' do.
        key = name.lstrip(".")
        self._comment(key, by_path, path)
        for i, field in enumerate(message.field):
            self._comment(f"{key}.{field.name}", by_path, (*path, _FIELD_NO, i))
        for i, nested in enumerate(message.nested_type):
            self._add_message(f"{name}.{nested.name}", nested, (*path, _NESTED, i), by_path)
        for enum in message.enum_type:
            self.enums[f"{name}.{enum.name}"] = enum

    def bindings(self) -> Iterator[Binding]:
        for service_name, service in self.services:
            for method in service.method:
                if not method.options.HasExtension(_HTTP_RULE):
                    continue
                rule = method.options.Extensions[_HTTP_RULE]
                rules = [rule, *rule.additional_bindings]
                for index, each in enumerate(rules):
                    verb, template = _verb_and_template(each)
                    yield Binding(service_name, method, verb, template, each.body, index)


def _verb_and_template(rule: http_pb2.HttpRule) -> tuple[str, str]:
    pattern = rule.WhichOneof("pattern")
    if pattern == "custom":
        return rule.custom.kind.lower(), rule.custom.path
    if pattern not in _METHODS:
        raise ValueError(f"unsupported HTTP rule pattern {pattern!r}")
    return pattern, getattr(rule, pattern)


def _behaviors(field: descriptor_pb2.FieldDescriptorProto) -> set[int]:
    return set(field.options.Extensions[_FIELD_BEHAVIOR])


class SchemaBuilder:
    """JSON Schemas (proto3 JSON mapping) of messages, kept in components by full name."""

    def __init__(self, descriptors: Descriptors) -> None:
        self._d = descriptors
        self.components: dict[str, Any] = {}

    def ref(self, type_name: str) -> dict[str, Any]:
        """A `$ref` to the message's schema (built once), or a well-known type's form."""
        if type_name in _WELL_KNOWN:
            return dict(_WELL_KNOWN[type_name])
        key = type_name.lstrip(".")
        if key not in self.components:
            self.components[key] = {}  # placed first, so that recursive messages terminate
            self.components[key] = self._message(type_name)
        return {"$ref": f"#/components/schemas/{key}"}

    def _message(self, type_name: str) -> dict[str, Any]:
        message = self._d.messages[type_name]
        properties: dict[str, Any] = {}
        required: list[str] = []
        for field in message.field:
            property_schema = self.field(field)
            description = self._d.comments.get(f"{type_name.lstrip('.')}.{field.name}")
            if description:
                property_schema["description"] = description
            behaviors = _behaviors(field)
            if field_behavior_pb2.OUTPUT_ONLY in behaviors:
                property_schema["readOnly"] = True
            properties[field.json_name] = rest_schemas.or_null(property_schema)
            if field_behavior_pb2.REQUIRED in behaviors:
                required.append(field.json_name)
                # proto3 has no presence for scalars: a required string is a non-empty one.
                if property_schema.get("type") == "string":
                    property_schema["minLength"] = 1
        schema: dict[str, Any] = {"type": "object", "properties": properties}
        description = self._d.comments.get(type_name.lstrip("."))
        if description:
            schema["description"] = description
        if required:
            schema["required"] = required
        return schema

    def field(self, field: descriptor_pb2.FieldDescriptorProto) -> dict[str, Any]:
        if field.type == _FIELD.TYPE_MESSAGE:
            entry = self._d.messages.get(field.type_name)
            if entry is not None and entry.options.map_entry:
                return {"type": "object", "additionalProperties": self.field(entry.field[1])}
            single = self.ref(field.type_name)
        elif field.type == _FIELD.TYPE_ENUM:
            # The zero value `*_UNSPECIFIED` means "not set", which no client sends.
            values = self._d.enums[field.type_name].value
            names = [v.name for v in values if not (v.number == 0 and "UNSPECIFIED" in v.name)]
            single = {"type": "string", "enum": names}
        else:
            single = dict(_SCALARS[field.type])
        if field.label == _FIELD.LABEL_REPEATED:
            return {"type": "array", "items": single}
        return single


def _path_key(binding: Binding, descriptors: Descriptors) -> tuple[str, dict[str, str]]:
    """The OpenAPI path (parameters by JSON name) and the JSON name of each path field."""
    request = descriptors.messages[binding.method.input_type]
    json_names = {f.name: f.json_name for f in request.field}
    names = {field: json_names.get(field, field) for field in binding.path_fields}
    path = re.sub(
        r"\{([a-z0-9_.]+)(?:=[^}]*)?\}", lambda m: "{" + names[m.group(1)] + "}", binding.template
    )
    return path, names


def _parameters(
    binding: Binding,
    descriptors: Descriptors,
    schemas: SchemaBuilder,
    path_names: dict[str, str],
    rules: dict[str, dict[str, Any]],
) -> list[dict[str, Any]]:
    request_type = binding.method.input_type
    request = descriptors.messages[request_type]
    parameters: list[dict[str, Any]] = []
    for field in request.field:
        description = descriptors.comments.get(f"{request_type.lstrip('.')}.{field.name}", "")
        if field.name in path_names:
            parameters.append(
                {
                    "name": path_names[field.name],
                    "in": "path",
                    "required": True,
                    "description": description,
                    # A path segment: the gateway never matches an empty one or a slash.
                    "schema": rules.get(
                        path_names[field.name], {"type": "string", "pattern": "^[^/]+$"}
                    ),
                }
            )
            continue
        if binding.body == "*" or field.name == binding.body:
            continue
        if field.type == _FIELD.TYPE_MESSAGE:
            continue  # only scalars and enums (and lists of them) map onto query parameters
        parameter: dict[str, Any] = {
            "name": field.json_name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": rules.get(field.json_name, schemas.field(field)),
        }
        if field.label == _FIELD.LABEL_REPEATED:
            parameter |= {"style": "form", "explode": True}
        parameters.append(parameter)
    return parameters


def _request_body(
    binding: Binding, descriptors: Descriptors, schemas: SchemaBuilder, rest: rest_schemas.Rest
) -> dict[str, Any] | None:
    if not binding.body:
        return None
    request = descriptors.messages[binding.method.input_type]
    if binding.body == "*":
        schema = schemas.ref(binding.method.input_type)
    else:
        field = next(f for f in request.field if f.name == binding.body)
        if field.type_name == HTTP_BODY:
            if rest.request is None:
                raise ValueError(f"{binding.rpc}: an HttpBody request needs its JSON schema")
            schema = rest.request
        else:
            schema = schemas.field(field)
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(binding: Binding, schemas: SchemaBuilder, rest: rest_schemas.Rest) -> dict[str, Any]:
    output = binding.method.output_type
    if output == HTTP_BODY and not rest.responses:
        raise ValueError(f"{binding.rpc}: an HttpBody answer needs its documented responses")
    responses: dict[str, Any] = {}
    if rest.responses:
        responses.update(rest.responses)
    else:
        responses[rest.status] = {
            "description": "Success.",
            "content": {"application/json": {"schema": schemas.ref(output)}},
        }
    responses.update(rest.errors)
    return responses


def _resolve(value: Any, schemas: SchemaBuilder) -> Any:
    """Replaces rest_schemas.message() markers by `$ref`s to the derived message schemas."""
    if isinstance(value, dict):
        if set(value) == {rest_schemas.MESSAGE_MARKER}:
            return schemas.ref("." + value[rest_schemas.MESSAGE_MARKER])
        return {k: _resolve(v, schemas) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, schemas) for v in value]
    return value


def document(files: descriptor_pb2.FileDescriptorSet) -> dict[str, Any]:
    """The OpenAPI document of every REST binding in `files`."""
    descriptors = Descriptors(files)
    schemas = SchemaBuilder(descriptors)
    paths: dict[str, dict[str, Any]] = {}
    for binding in descriptors.bindings():
        rest = rest_schemas.REST.get(binding.rpc, rest_schemas.Rest())
        path, path_names = _path_key(binding, descriptors)
        operation: dict[str, Any] = {
            "operationId": binding.operation_id,
            "tags": [binding.service.rsplit(".", 1)[-1]],
            "summary": binding.rpc,
            "description": descriptors.comments.get(binding.rpc, ""),
            "parameters": _parameters(binding, descriptors, schemas, path_names, rest.parameters)
            + rest.headers,
            "responses": _responses(binding, schemas, rest),
        }
        access = access_for("/" + binding.rpc[::-1].replace(".", "/", 1)[::-1])
        if access is not None and not access.credentials:
            operation["security"] = []
        body = _request_body(binding, descriptors, schemas, rest)
        if body is not None:
            operation["requestBody"] = body
        if binding.verb in paths.get(path, {}):
            raise ValueError(f"{binding.verb.upper()} {path} is bound twice")
        paths.setdefault(path, {})[binding.verb] = operation
    for path, item in rest_schemas.GATEWAY_PATHS.items():
        for verb, operation in item.items():
            paths.setdefault(path, {})[verb] = operation
    spec = {
        "openapi": "3.1.0",
        "info": rest_schemas.INFO,
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": rest_schemas.SCHEMAS,
            "responses": rest_schemas.RESPONSES,
            "securitySchemes": rest_schemas.SECURITY_SCHEMES,
        },
        "security": [{name: []} for name in rest_schemas.SECURITY_SCHEMES],
    }
    spec = _resolve(spec, schemas)
    spec["components"]["schemas"] = dict(
        sorted({**spec["components"]["schemas"], **schemas.components}.items())
    )
    return spec


def render(files: descriptor_pb2.FileDescriptorSet) -> str:
    return json.dumps(document(files), indent=1, ensure_ascii=False) + "\n"


def render_from_protos() -> str:
    """The document for protos/ as it is now."""
    from service.protogen import build_descriptor_set

    with tempfile.TemporaryDirectory() as tmp:
        path = build_descriptor_set(Path(tmp) / "api.pb")
        files = descriptor_pb2.FileDescriptorSet.FromString(path.read_bytes())
    return render(files)
