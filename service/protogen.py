"""Builds everything that is derived from protos/: Python code, the OpenAPI document,
descriptor sets, buf inputs.

`python -m service.protogen python|check|third-party DIR` is what the Makefile runs.
"""

from __future__ import annotations

import filecmp
import re
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parent.parent
PROTO_ROOT = REPO / "protos"
GENERATED = REPO / "service" / "v1"
# google/api and google/rpc files come from the googleapis-common-protos package, so that
# nothing is fetched from the network.
THIRD_PARTY_FILES = (
    "google/api/annotations.proto",
    "google/api/http.proto",
    "google/api/httpbody.proto",
    "google/api/field_behavior.proto",
    "google/rpc/status.proto",
    "google/rpc/error_details.proto",
)
# Envoy renders gRPC errors as JSON only when these are in its descriptor set.
STATUS_FILES = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def _googleapis_root() -> Path:
    import google.api

    return Path(google.api.__path__[0]).parent.parent


def _include_dirs() -> list[str]:
    well_known = resources.files("grpc_tools") / "_proto"
    return [str(PROTO_ROOT), str(well_known), str(_googleapis_root())]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def _protoc(*args: str) -> None:
    argv = ["protoc", *(f"-I{d}" for d in _include_dirs()), *args]
    if protoc.main(argv) != 0:
        raise SystemExit(f"protoc failed: {' '.join(argv)}")


# protoc names the generated modules after the proto package (`eventmgmt.v1`); they live in
# the folder `service/v1`, so their imports of each other are rewritten to that import name.
_PROTO_IMPORT = re.compile(r"^(from|import) eventmgmt\.v1\b", re.MULTILINE)


def _own_imports(source: str) -> str:
    return _PROTO_IMPORT.sub(r"\1 service.v1", source)


def generate_python(out: Path = GENERATED) -> None:
    """Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py for protos/eventmgmt/v1 into `out`."""
    with tempfile.TemporaryDirectory() as tmp:
        _protoc(
            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}", *proto_files()
        )
        produced = Path(tmp) / "eventmgmt" / "v1"
        out.mkdir(parents=True, exist_ok=True)
        for old in out.glob("*_pb2*.py*"):
            old.unlink()
        for new in produced.iterdir():
            (out / new.name).write_text(_own_imports(new.read_text()))
        (out / "__init__.py").write_text('"""Generated from protos/eventmgmt/v1; never edit."""\n')


def generate_openapi() -> None:
    """Writes gateway/openapi.json from the protos' HTTP annotations (service.openapi)."""
    from service import openapi

    openapi.OPENAPI_JSON.write_text(openapi.render_from_protos())


def check_generated() -> int:
    """Returns 1 (and says which files) when service/v1 or gateway/openapi.json differs from
    a fresh generation."""
    from service import openapi

    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "v1"
        generate_python(fresh)
        comparison = filecmp.dircmp(fresh, GENERATED, ignore=["__pycache__"])
        stale = comparison.left_only + comparison.right_only + comparison.diff_files
        stale += [
            n
            for n in comparison.common_files
            if not filecmp.cmp(fresh / n, GENERATED / n, shallow=False)
        ]
    path = openapi.OPENAPI_JSON
    if not path.exists() or path.read_text() != openapi.render_from_protos():
        stale.append(str(path.relative_to(REPO)))
    if stale:
        print(
            f"generated code is stale: {sorted(set(stale))}; run `make generate`", file=sys.stderr
        )
        return 1
    print("generated code is up to date")
    return 0


def build_descriptor_set(out: Path) -> Path:
    """Writes the descriptor set (with imports and source info) that Envoy transcodes with."""
    out.parent.mkdir(parents=True, exist_ok=True)
    _protoc(
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out}",
        *proto_files(),
        *STATUS_FILES,
    )
    return out


def copy_third_party(out: Path) -> None:
    """Copies the googleapis files that protos/ imports, as a second module for buf."""
    root = _googleapis_root()
    for name in THIRD_PARTY_FILES:
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / name, target)


def main(argv: list[str]) -> int:
    command = argv[0] if argv else ""
    if command == "python":
        generate_python()
        generate_openapi()
        return 0
    if command == "check":
        return check_generated()
    if command == "third-party" and len(argv) == 2:
        copy_third_party(Path(argv[1]))
        return 0
    print("usage: python -m service.protogen python|check|third-party DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
