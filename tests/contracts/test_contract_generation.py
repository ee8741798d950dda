"""Code generation: gen/python is current, the staleness check catches drift, and the offline path
for buf/validate/validate.proto (descriptor extracted from the protovalidate wheel, rendered back to
source for buf and Node) still works and is faithful."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from buf.validate import validate_pb2
from google.api import field_behavior_pb2
from google.protobuf import descriptor_pb2

# Custom options used by the contracts must be registered before descriptors are parsed, so that
# parsed options compare equal (known extensions, not unknown fields).
assert field_behavior_pb2.field_behavior.number == 1052
ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"


def _load(name: str) -> ModuleType:
    if str(SCRIPTS) not in sys.path:
        sys.path.insert(0, str(SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gen_protos = _load("gen_protos")
descriptor_to_proto = _load("descriptor_to_proto")


def _protoc(*args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    return result


def _compile(
    include_dirs: list[Path], files: list[str], out: Path
) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    _protoc(*(f"--proto_path={d}" for d in include_dirs), f"--descriptor_set_out={out}", *files)
    return {f.name: f for f in descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file}


def run_gen_protos(*args: str) -> subprocess.CompletedProcess[str]:
    """``scripts/gen_protos.py`` with ``args``, run from the repository root; its output captured."""
    return subprocess.run(
        [sys.executable, "scripts/gen_protos.py", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )


def test_gen_python_is_up_to_date() -> None:
    result = run_gen_protos("--check")
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout


def test_check_lists_changed_missing_and_extra_files(tmp_path: Path) -> None:
    copy = tmp_path / "python"
    shutil.copytree(ROOT / "gen" / "python", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "zehanx/gateway/v1/job_pb2.py").write_text("# edited by hand\n")
    (copy / "zehanx/common/v1/plan_pb2.pyi").unlink()
    (copy / "zehanx/common/v1/leftover_pb2.py").write_text("")
    result = run_gen_protos("--check", "--out", str(copy))
    assert result.returncode == 1
    assert "zehanx/gateway/v1/job_pb2.py (out of date)" in result.stderr
    assert "zehanx/common/v1/plan_pb2.pyi (missing)" in result.stderr
    assert "zehanx/common/v1/leftover_pb2.py (not generated" in result.stderr
    assert "gateway_service_pb2.py" not in result.stderr


def test_generation_is_deterministic(tmp_path: Path) -> None:
    gen_protos.generate(tmp_path / "a")
    gen_protos.generate(tmp_path / "b")
    assert gen_protos.stale_files(tmp_path / "a", tmp_path / "b") == []


def test_validate_descriptor_is_still_extractable_from_the_protovalidate_wheel() -> None:
    """Guards the private name `protovalidate._gen.buf.validate.validate_pb._DESC` (protovalidate 2.1.0)."""
    fdp = gen_protos.validate_descriptor()
    assert fdp.name == "buf/validate/validate.proto"
    assert fdp.package == "buf.validate"
    messages = {m.name for m in fdp.message_type}
    assert {
        "FieldRules",
        "StringRules",
        "RepeatedRules",
        "MessageRules",
        "OneofRules",
        "Violation",
    } <= messages
    extensions = {(e.name, e.number, e.extendee) for e in fdp.extension}
    assert ("field", 1159, ".google.protobuf.FieldOptions") in extensions
    assert ("message", 1159, ".google.protobuf.MessageOptions") in extensions
    # The generated validate_pb2 in gen/python was compiled from exactly this descriptor.
    generated = descriptor_pb2.FileDescriptorProto.FromString(validate_pb2.DESCRIPTOR.serialized_pb)
    assert generated == fdp


def test_rendered_validate_proto_compiles_back_to_the_same_descriptor(tmp_path: Path) -> None:
    fdp = gen_protos.validate_descriptor()
    source = tmp_path / "src" / "buf/validate/validate.proto"
    source.parent.mkdir(parents=True)
    source.write_text(descriptor_to_proto.render_file(fdp))
    compiled = _compile([tmp_path / "src"], ["buf/validate/validate.proto"], tmp_path / "out.binpb")
    assert compiled["buf/validate/validate.proto"].SerializeToString(
        deterministic=True
    ) == fdp.SerializeToString(deterministic=True)


def test_rendered_contracts_compile_back_to_the_same_descriptors(tmp_path: Path) -> None:
    """The printer is faithful for proto3 too: maps, oneofs, optional, enums, services, custom options."""
    deps = tmp_path / "deps"
    gen_protos.render_deps(deps)
    files = gen_protos.contract_files()
    original = _compile([gen_protos.PROTOS, deps], files, tmp_path / "original.binpb")
    decoder = descriptor_to_proto.OptionsDecoder([gen_protos.validate_descriptor(), *original.values()])
    rendered_root = tmp_path / "rendered"
    for name, fdp in original.items():
        target = rendered_root / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(descriptor_to_proto.render_file(fdp, decoder))
    rendered = _compile([rendered_root, deps], files, tmp_path / "rendered.binpb")
    assert sorted(rendered) == sorted(original) == files
    for name in files:
        assert rendered[name] == original[name], name
        assert rendered[name].SerializeToString(deterministic=True) == original[name].SerializeToString(
            deterministic=True
        ), name


def test_deps_only_writes_the_imports_buf_and_node_need() -> None:
    result = run_gen_protos("--deps-only")
    assert result.returncode == 0, result.stderr
    build = ROOT / "protos" / "build"
    validate = (build / "buf/validate/validate.proto").read_text()
    assert validate == descriptor_to_proto.render_file(gen_protos.validate_descriptor())
    assert "extend google.protobuf.FieldOptions {" in validate
    assert (build / "google/api/field_behavior.proto").is_file()
    assert (build / "google/rpc/status.proto").is_file()


@pytest.mark.skipif(
    not (ROOT / "node_modules" / ".bin" / "buf").exists(),
    reason="node_modules/.bin/buf missing: run `npm install` at the repository root",
)
def test_buf_lint_and_format_are_clean() -> None:
    result = subprocess.run(["scripts/buf_check.sh"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lint and format clean" in result.stdout
