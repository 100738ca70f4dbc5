"""`sam3spec validate`: one FILE:LINE:COL line per error, exit 2, no traceback, nothing written."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "tests" / "data" / "minimal.yaml").read_text()
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^:]+): (?P<msg>.+)$")


def validate(*paths, cwd=ROOT):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "sam3spec", "validate", *map(str, paths)], cwd=cwd,
                          capture_output=True, text=True, env=env)


def tree(path: Path) -> set:
    return {(str(p), p.stat().st_mtime_ns) for p in path.rglob("*")}


def line_of(text: str, needle: str) -> int:
    """The last line that contains `needle`."""
    return max(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# (case, original text, replacement, key path reported, a word of the message, text of the line reported)
BROKEN = [
    ("syntax", "  weights:", "  weights: [", "(top level)", "YAML syntax error", "sizes:"),
    ("unknown_key", "    seed: 0", "    seed: 0\n    sead: 1", "model.weights.sead", "unknown key", "sead"),
    ("wrong_type", "    max: 6", "    max: six", "dims[0].max", "wrong type", "six"),
    ("undeclared_dim", "shape: [count, width]", "shape: [count, height]", "components[0].inputs[0].shape[1]",
     "not a declared size or dim", "height"),
    ("negative_tolerance", "atol: 2.0e-4", "atol: -2.0e-4", "components[0].outputs[0].atol", "greater than 0", "-2.0e-4"),
    ("duplicate_key", "name: minimal", "name: minimal\nname: again", "name", "duplicate key", "again"),
    ("unused_dim", "shape: [count, width]", "shape: [2, width]", "dims[0].name", "no shape uses it", "name: count"),
    ("example_range", "    example: 3", "    example: 9", "dims[0].example", "min <= example <= max", "example: 9"),
    ("not_importable", "adapter: sam3spec.runtime.resolve:resolve", "adapter: sam3spec.nowhere:thing",
     "components[0].adapter", "not importable", "nowhere"),
    ("unknown_target_kind", "kind: llvm", "kind: vulkan", "targets[0].target.kind", "not one of", "vulkan"),
    ("duplicate_name", "      - {name: bias,", "      - {name: x,", "components[0].inputs[1].name", "duplicate input",
     "{name: x,"),
]


def test_minimal_manifest_is_valid():
    result = validate(ROOT / "tests" / "data" / "minimal.yaml")
    assert result.returncode == 0, result.stderr


def test_shipped_manifests_are_valid():
    result = validate(*sorted((ROOT / "manifests").glob("*.yaml")))
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("case,old,new,path,word,at", BROKEN, ids=[b[0] for b in BROKEN])
def test_each_error_is_one_located_line(tmp_path, case, old, new, path, word, at):
    assert old in MINIMAL
    text = MINIMAL.replace(old, new, 1)
    manifest = tmp_path / f"{case}.yaml"
    manifest.write_text(text)
    before, before_root = tree(tmp_path), tree(ROOT / "sam3spec")
    result = validate(manifest.name, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    m = LINE.match(lines[0])
    assert m, lines[0]
    assert m["file"] == manifest.name and m["path"] == path and word in m["msg"], lines[0]
    assert int(m["line"]) == line_of(text, at), (lines[0], line_of(text, at))
    assert tree(tmp_path) == before and tree(ROOT / "sam3spec") == before_root  # nothing written


@pytest.mark.parametrize("text,word", [("", "empty file"), ("- a\n- b\n", "must be a mapping"),
                                       ("{a: 1\n", "YAML syntax error")])
def test_not_a_manifest(tmp_path, text, word):
    (tmp_path / "m.yaml").write_text(text)
    result = validate("m.yaml", cwd=tmp_path)
    assert result.returncode == 2 and word in result.stderr and "Traceback" not in result.stderr
    assert LINE.match(result.stderr.strip())


def test_several_files_report_every_error(tmp_path):
    (tmp_path / "a.yaml").write_text(MINIMAL.replace("    max: 6", "    max: six"))
    (tmp_path / "b.yaml").write_text(MINIMAL.replace("    seed: 0", "    seed: 0\n    sead: 1"))
    result = validate("a.yaml", "b.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert [line.split(":")[0] for line in result.stderr.strip().splitlines()] == ["a.yaml", "b.yaml"]


def test_missing_file(tmp_path):
    result = validate("nope.yaml", cwd=tmp_path)
    assert result.returncode == 2 and "nope.yaml:1:1:" in result.stderr and "Traceback" not in result.stderr


def test_derived_manifest_overrides_only_what_it_says():
    from sam3spec import manifest

    full = manifest.load(ROOT / "manifests" / "sam3-image.yaml").data
    tiny = manifest.load(ROOT / "manifests" / "sam3-image-tiny.yaml").data
    assert tiny["name"] == "sam3-image-tiny" and tiny["sizes"]["image"] == 336
    assert tiny["sizes"]["text_len"] == full["sizes"]["text_len"] == 32          # inherited key
    assert [c["name"] for c in tiny["components"]] == [c["name"] for c in full["components"]]
    trunk = {c["name"]: c for c in tiny["components"]}["vit_trunk"]
    assert trunk["tolerance"] == {"atol": 1e-4, "rtol": 1e-4} and trunk["adapter"].endswith(":vit_trunk")
    prompt = {c["name"]: c for c in tiny["components"]}["sam_prompt_encoder"]["inputs"]
    assert prompt[0]["sample"]["high"] == 336.0 and prompt[0]["shape"] == [1, "clicks", 2]  # merged by name
    assert tiny["substitutions"] == full["substitutions"] and tiny["converters"] == full["converters"]


def test_error_in_a_derived_manifest_points_into_that_file(tmp_path):
    (tmp_path / "base.yaml").write_text(MINIMAL)
    (tmp_path / "child.yaml").write_text("manifest_version: 1\nextends: base.yaml\nname: child\n"
                                         "components:\n  - name: first\n    tolerance: {atol: 0, rtol: 1}\n")
    result = validate("child.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "child.yaml:6:23: components[0].tolerance.atol: 0 must be greater than 0"
