"""`sam3spec validate`: one FILE:LINE:COL line per error, exit 2, no traceback, nothing written."""

import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MINIMAL = (ROOT / "tests" / "data" / "minimal.yaml").read_text()
# A key path never contains ': ' (it may contain ':', as in model.overrides["sam3.model.vitdet:ViT"]).
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<path>.+?): (?P<msg>.+)$")


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


def test_the_video_manifest_shares_the_image_one():
    """sam3-video extends sam3-image (null removes the image builder's arguments); sam3-video-tiny lays
    sam3-image-tiny's own keys over it (overlays), so neither copies what the image manifests say."""
    from sam3spec import manifest

    image = manifest.load(ROOT / "manifests" / "sam3-image.yaml").data
    image_tiny = manifest.load(ROOT / "manifests" / "sam3-image-tiny.yaml").data
    video = manifest.load(ROOT / "manifests" / "sam3-video.yaml").data
    tiny = manifest.load(ROOT / "manifests" / "sam3-video-tiny.yaml").data
    assert "eval_mode" not in video["model"]["builder_args"] and video["model"]["builder_args"]["device"] == "cpu"
    assert set(video["model"]["weights"]["initialise"]) == {"detector." + k for k in image["model"]["weights"]["initialise"]}
    image_names = [c["name"] for c in image["components"]]
    assert [c["name"] for c in video["components"]] == image_names + [
        "memory_attention", "memory_encoder", "memory_encoder_update", "tracker_mask_decoder", "object_pointer",
        "pointer_position", "mask_downsample", "mask_prompt_encoder"]
    assert "predict" not in video and video["track"]["contract"] == image["predict"]["contract"]
    ops = [c["op"] for c in video["converters"]]
    assert ops[:len(image["converters"])] == [c["op"] for c in image["converters"]] and "slice.Tensor" in ops
    assert tiny["name"] == "sam3-video-tiny" and tiny["sizes"] == {**image_tiny["sizes"], "mask": 336, "mask_in": 384}
    assert tiny["track"]["e2e"]["prompts"] == video["track"]["e2e"]["prompts"] and tiny["track"]["e2e"]["clip"]["frames"] == 6
    assert tiny["model"]["builder"] == video["model"]["builder"]
    assert {**image_tiny["model"]["overrides"],
            "sam3.model.sam3_video_inference:Sam3VideoInferenceWithInstanceInteractivity": {"image_size": 336}} \
        == tiny["model"]["overrides"]
    trunk = {c["name"]: c for c in tiny["components"]}["vit_trunk"]
    assert trunk["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}        # the overlay's component change, by name


def test_null_removes_an_inherited_key_and_overlays_apply_before_the_file(tmp_path):
    from sam3spec import manifest

    (tmp_path / "base.yaml").write_text(MINIMAL)
    (tmp_path / "variant.yaml").write_text("manifest_version: 1\nextends: base.yaml\nname: variant\n"
                                           "sizes: {width: 4}\ntolerance: {atol: 1.0e-3}\n")
    (tmp_path / "child.yaml").write_text("manifest_version: 1\nextends: base.yaml\noverlays: [variant.yaml]\n"
                                         "name: child\nsubstitutions: [{name: no_torchvision, keep_original_if: null}]\n"
                                         "converters:\n  - {op: cat.default, with: sam3spec.converters.cat_promote:"
                                         "cat_promote, reason: by op}\n")
    data = manifest.load(tmp_path / "child.yaml").data
    assert data["name"] == "child" and data["sizes"] == {"width": 4} and data["tolerance"] == {"atol": 1e-3, "rtol": 1e-4}
    assert "keep_original_if" not in data["substitutions"][0] and data["substitutions"][0]["when"] == "import"
    assert [c["reason"] for c in data["converters"]] == ["by op"]     # merged by op, not appended
    (tmp_path / "lone.yaml").write_text(MINIMAL.replace("name: minimal", "name: lone\noverlays: [variant.yaml]"))
    (tmp_path / "gone.yaml").write_text("manifest_version: 1\nextends: base.yaml\noverlays: [nope.yaml]\nname: gone\n")
    for name, word in (("lone.yaml", "overlays need an extends"), ("gone.yaml", "cannot read 'nope.yaml'")):
        result = validate(name, cwd=tmp_path)
        assert result.returncode == 2 and word in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith(f"{name}:")


def test_error_in_a_derived_manifest_points_into_that_file(tmp_path):
    (tmp_path / "base.yaml").write_text(MINIMAL)
    (tmp_path / "child.yaml").write_text("manifest_version: 1\nextends: base.yaml\nname: child\n"
                                         "components:\n  - name: first\n    tolerance: {atol: 0, rtol: 1}\n")
    result = validate("child.yaml", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "child.yaml:6:23: components[0].tolerance.atol: 0 must be greater than 0"


# --- any file at all: exit 0, or exit 2 with located lines only, quickly, writing nothing ------------------------

def validate_here(*paths, clock=time.process_time) -> tuple[int, str, str, float]:
    """`sam3spec validate` in this process (much faster than a subprocess): exit code, stdout, stderr, seconds.

    The seconds are this process's CPU time by default: a bound on the validator's own work, which another job
    on a busy CI machine does not move (a wall-clock bound failed there at 7.9 s for 0.3 s of work)."""
    from sam3spec import cli

    out, err, dont_write = io.StringIO(), io.StringIO(), sys.dont_write_bytecode
    start = clock()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = cli.main(["validate", *map(str, paths)])
    finally:
        sys.dont_write_bytecode = dont_write
    return rc, out.getvalue(), err.getvalue(), clock() - start


def located(tmp_path, data, name="m.yaml", seconds=2.0) -> list[re.Match]:
    """Write `data` (text or bytes), validate it; it must fail with located lines only, within `seconds`."""
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    before = tree(tmp_path)
    rc, out, err, elapsed = validate_here(path)
    assert rc == 2 and out == "" and "Traceback" not in err, (rc, err)
    assert elapsed < seconds, elapsed
    assert tree(tmp_path) == before  # nothing written
    matches = [LINE.match(line) for line in err.splitlines()]
    assert matches and all(matches), err
    assert all("internal error" not in m["msg"] for m in matches), err
    return matches


def one(tmp_path, data, **kw) -> re.Match:
    matches = located(tmp_path, data, **kw)
    assert len(matches) == 1, [m[0] for m in matches]
    return matches[0]


def at(m: re.Match) -> tuple[int, int]:
    return int(m["line"]), int(m["col"])


def test_latin1_is_located_at_the_first_bad_byte(tmp_path):
    text = MINIMAL.replace("name: minimal", "name: minimal\ndescription: café, naïve")
    m = one(tmp_path, text.encode("latin-1"))
    assert at(m) == (line_of(text, "café"), len("description: caf") + 1)
    assert m["path"] == "(top level)" and "not UTF-8" in m["msg"] and "0xe9" in m["msg"], m[0]


def test_binary_junk(tmp_path):
    m = one(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    assert at(m) == (1, 1) and "not UTF-8" in m["msg"], m[0]
    m = one(tmp_path, b"manifest_version: 1\nname: x\x00\x01\x02")
    assert at(m) == (2, 8) and "NUL" in m["msg"], m[0]


@pytest.mark.parametrize("encoding,where", [("utf-16", (1, 1)), ("utf-16-le", (1, 2)), ("utf-16-be", (1, 1)),
                                            ("utf-32", (1, 1))])
def test_utf16_and_utf32(tmp_path, encoding, where):
    m = one(tmp_path, MINIMAL.encode(encoding))
    assert at(m) == where and encoding[:6].upper() in m["msg"] and "UTF-8" in m["msg"], m[0]


def test_utf8_byte_order_mark_is_fine(tmp_path):
    (tmp_path / "m.yaml").write_bytes(b"\xef\xbb\xbf" + MINIMAL.replace("    max: 6", "    max: six").encode())
    rc, _, err, _ = validate_here(tmp_path / "m.yaml")
    assert rc == 2 and err.startswith(f"{tmp_path / 'm.yaml'}:{line_of(MINIMAL, 'max: 6')}:10: dims[0].max: "), err


def billion_laughs(indent="    ") -> str:
    lines = [f"{indent}lol0: &lol0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    lines += [f"{indent}lol{i}: &lol{i} [{', '.join([f'*lol{i - 1}'] * 9)}]" for i in range(1, 10)]
    return "\n".join(lines) + "\n"  # 9 ** 9 = 387 million strings once expanded


def test_alias_bomb(tmp_path):
    text = MINIMAL.replace("    seed: 0\n", "    seed: 0\n  builder_args:\n" + billion_laughs())
    m = one(tmp_path, text)
    assert at(m)[0] > line_of(text, "lol0:") and "20000 values" in m["msg"] and "aliases" in m["msg"], m[0]
    result = validate(tmp_path / "m.yaml")  # and through a real process
    assert result.returncode == 2 and result.stderr.strip() == m[0]


def test_aliases_within_the_limits_are_fine(tmp_path):
    text = MINIMAL.replace("tolerance: {atol: 1.0e-4, rtol: 1.0e-4}", "tolerance: &tol {atol: 1.0e-4, rtol: 1.0e-4}")
    text = text.replace("      - {name: y, atol: 2.0e-4}", "      - {name: y, atol: 2.0e-4}\n    tolerance: *tol")
    manifest = tmp_path / "m.yaml"
    manifest.write_text(text)
    from sam3spec import manifest as manifest_lib

    try:
        loaded = manifest_lib.load(manifest)
    except manifest_lib.ManifestErrors as exc:  # only what minimal.yaml itself may lack: nothing about aliases
        assert all("alias" not in e.message for e in exc.errors)
    else:
        assert loaded.data["components"][0]["tolerance"] == {"atol": 1e-4, "rtol": 1e-4}


@pytest.mark.parametrize("case", ["flow_open", "flow_closed", "mappings", "block", "recursive", "alias_depth"])
def test_deep_nesting(tmp_path, case):
    value = {"flow_open": "[" * 100_000, "flow_closed": "[" * 100_000 + "]" * 100_000,
             "mappings": "{a: " * 50_000 + "1" + "}" * 50_000,
             "block": "\n" + "".join("    " + "  " * i + f"k{i}:\n" for i in range(40)) + "    " + "  " * 40 + "end: 1",
             "recursive": "&r [1, *r]",
             "alias_depth": "\n    a: &deep " + "[" * 20 + "]" * 20 + "\n    b: " + "[" * 20 + "*deep" + "]" * 20}[case]
    text = MINIMAL.replace("    seed: 0\n", "    seed: 0\n  builder_args:\n    x: " + value + "\n")
    m = one(tmp_path, text)
    words = {"recursive": "recursive alias", "block": "32 levels", "alias_depth": "32 levels"}.get(case, "nest")
    assert at(m)[0] >= line_of(text, "builder_args:") and words in m["msg"], m[0]
    if case == "flow_open":
        result = validate(tmp_path / "m.yaml")  # a real process: no RecursionError, no crash
        assert result.returncode == 2 and result.stderr.strip() == m[0]


def test_5000_digit_seed(tmp_path):
    text = MINIMAL.replace("    seed: 0", "    seed: " + "7" * 5000)
    m = one(tmp_path, text)
    assert at(m) == (line_of(text, "seed:"), 11) and m["path"] == "model.weights.seed", m[0]
    assert "5000 characters" in m["msg"] and "out of range" in m["msg"], m[0]


@pytest.mark.parametrize("old,new,path,bound", [
    ("    seed: 0", f"    seed: {2 ** 64}", "model.weights.seed", "at most 18446744073709551615"),
    ("    seed: 0", "    seed: -1", "model.weights.seed", "at least 0"),
    ("  width: 8", f"  width: {2 ** 63}", "sizes.width", "at most 2147483647"),
    ("    max: 6", f"    max: {2 ** 63 + 1}", "dims[0].max", "at most 2147483647"),
    ("shape: [width]", f"shape: [{2 ** 64}]", "components[0].inputs[1].shape[0]", "at most 2147483647"),
])
def test_integers_beyond_int64(tmp_path, old, new, path, bound):
    text = MINIMAL.replace(old, new, 1)
    m = next(m for m in located(tmp_path, text) if m["path"] == path)
    assert bound in m["msg"] and int(m["line"]) == line_of(text, new.strip()), m[0]


def test_float_where_an_integer_is_needed(tmp_path):
    m = one(tmp_path, MINIMAL.replace("    seed: 0", "    seed: 1.0"))
    assert m["path"] == "model.weights.seed" and "expected integer" in m["msg"], m[0]


def test_infinite_and_nan_tolerances(tmp_path):
    text = MINIMAL.replace("tolerance: {atol: 1.0e-4, rtol: 1.0e-4}", "tolerance: {atol: .inf, rtol: .nan}")
    matches = located(tmp_path, text)
    assert [(m["path"], at(m)) for m in matches] == [("tolerance.atol", (line_of(text, ".inf"), 19)),
                                                     ("tolerance.rtol", (line_of(text, ".inf"), 31))]
    assert all("not a finite number" in m["msg"] for m in matches)


@pytest.mark.parametrize("old,new,path", [
    ("{name: y, atol: 2.0e-4}", "{name: y, atol: -.inf}", "components[0].outputs[0].atol"),
    ("{name: y, atol: 2.0e-4}", "{name: y, rtol: 1.0e+999}", "components[0].outputs[0].rtol"),  # overflows to inf
    ("shape: [width], dtype: float32}", "shape: [width], dtype: float32, sample: {kind: normal, std: .NaN}}",
     "components[0].inputs[1].sample.std"),
    ("    seed: 0", "    seed: 0\n  builder_args: {scale: [1, .inf]}", "model.builder_args.scale[1]"),
])
def test_no_number_may_be_infinite_or_nan(tmp_path, old, new, path):
    matches = located(tmp_path, MINIMAL.replace(old, new))
    assert [m["path"] for m in matches if "not a finite number" in m["msg"]] == [path], [m[0] for m in matches]


def test_zero_size_dimension(tmp_path):
    text = MINIMAL.replace("shape: [count, width]", "shape: [count, 0, width]")
    m = one(tmp_path, text)
    assert m["path"] == "components[0].inputs[0].shape[1]" and m["msg"] == "0 must be at least 1", m[0]
    line = line_of(text, "[count, 0, width]")
    assert at(m) == (line, text.splitlines()[line - 1].index("0, width") + 1)


@pytest.mark.parametrize("extends,word,in_child", [
    ("nope.yaml", "No such file", True), ("child.yaml", "extends itself", True), (".", "directory", True),
    ("''", "empty", True), ("[a]", "path string", True), ("fifo.yaml", "not a regular file", True),
    ("/dev/zero", "not a regular file", True), ('"a\\0b"', "null", True), ("x" * 5000, "too long", True),
    ("cycle_a.yaml", "cycle", False), ("junk.bin", "NUL", False), ("list.yaml", "must be a mapping", False),
    ("utf16.yaml", "UTF-16", False), ("chain0.yaml", "more than 8 manifests", False),
])
def test_extends_problems(tmp_path, extends, word, in_child):
    (tmp_path / "junk.bin").write_bytes(bytes(range(256)))
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    (tmp_path / "utf16.yaml").write_bytes("manifest_version: 1\n".encode("utf-16"))
    (tmp_path / "cycle_a.yaml").write_text("extends: cycle_b.yaml\n")
    (tmp_path / "cycle_b.yaml").write_text("extends: cycle_a.yaml\n")
    for i in range(9):
        (tmp_path / f"chain{i}.yaml").write_text(f"extends: chain{i + 1}.yaml\n")
    os.mkfifo(tmp_path / "fifo.yaml")
    text = f"manifest_version: 1\nextends: {extends}\nname: child\n"
    m = one(tmp_path, text, name="child.yaml")
    assert word in m["msg"], m[0]
    if in_child:
        assert (m["file"], at(m), m["path"]) == (str(tmp_path / "child.yaml"), (2, 10), "extends"), m[0]


@pytest.mark.parametrize("key,word", [("1", "reads as 1"), ("on", "reads as True"), ("null", "reads as None"),
                                      ("[a, b]", "not a list"), ("{a: 1}", "not a mapping"), ("2024-01-01", "date"),
                                      ("<<", "merge keys")])
def test_keys_must_be_strings(tmp_path, key, word):
    text = MINIMAL.replace("    seed: 0", f"    seed: 0\n    {key}: 1")
    m = one(tmp_path, text)
    assert at(m) == (line_of(text, "seed: 0") + 1, 5) and word in m["msg"], m[0]


@pytest.mark.parametrize("value,word", [("2024-01-01", "reads as a date"), ("!!python/object:os.system x", "tag"),
                                        ("!!binary aGVsbG8=", "tag"), ("!!bool maybe", "cannot read"),
                                        ("!!int x", "cannot read")])
def test_only_plain_data(tmp_path, value, word):
    text = MINIMAL.replace('  version: "0.1.4"', f"  version: {value}")
    m = one(tmp_path, text)
    assert at(m) == (line_of(text, "version:"), 12) and m["path"] == "model.version" and word in m["msg"], m[0]


def test_huge_file(tmp_path):
    m = one(tmp_path, MINIMAL + "# " + "x" * 600_000 + "\n")
    assert at(m) == (1, 1) and "too large" in m["msg"], m[0]


def test_many_values(tmp_path):
    big = "[" + ", ".join(["1"] * 30_000) + "]"
    text = MINIMAL.replace("    seed: 0\n", f"    seed: 0\n  builder_args:\n    big: {big}\n")
    m = one(tmp_path, text)
    assert at(m)[0] == line_of(text, "big:") and "20000 values" in m["msg"], m[0]


def test_errors_are_capped(tmp_path):
    text = MINIMAL + "".join(f"unknown{i}: 1\n" for i in range(200))
    matches = located(tmp_path, text)
    assert len(matches) == 51 and matches[-1]["msg"] == "150 more errors not shown", matches[-1][0]


def test_odd_keys_stay_on_one_line(tmp_path):
    text = MINIMAL + '"a\\nb": 1\n"c: d": 2\n"\\u2028": 3\n"\\x85\\t": 4\nsam3.x:Y: 5\n'
    matches = located(tmp_path, text)
    assert sorted(m["path"] for m in matches) == ['["\\u2028"]', '["\\x85\\t"]', '["a\\nb"]', '["c:\\u0020d"]',
                                                  '["sam3.x:Y"]'], [m[0] for m in matches]
    assert all(m["msg"].startswith("unknown key") for m in matches)


def test_a_fifo_is_refused_unopened(tmp_path):
    os.mkfifo(tmp_path / "fifo.yaml")
    rc, _, err, elapsed = validate_here(tmp_path / "fifo.yaml", clock=time.perf_counter)  # a blocked open uses no CPU
    assert rc == 2
    assert err.strip() == f"{tmp_path / 'fifo.yaml'}:1:1: (top level): cannot read manifest: not a regular file"
    assert elapsed < 2


def test_load_raises_only_manifest_errors(tmp_path):
    """Every command that loads a manifest gets the same located errors."""
    from sam3spec import manifest
    from sam3spec.yamlsource import SourceError

    (tmp_path / "m.yaml").write_bytes(MINIMAL.encode("utf-16"))
    with pytest.raises(manifest.ManifestErrors) as exc:
        manifest.load(tmp_path / "m.yaml")
    assert [type(e) for e in exc.value.errors] == [SourceError] and "UTF-16" in exc.value.errors[0].message


@pytest.mark.parametrize("old,new,word", [
    ("{name: box_mask, shape: [1, boxes], dtype: bool,", "{name: box_mask, shape: [1, boxes], dtype: int64,",
     "makes a bool mask; 'box_mask' is int64"),
    ("sample: {kind: prompt_padding, text: 32}", "sample: {kind: prompt_padding, text: 35}",
     "text 35 must be shorter than the mask ('prompt_len': 35)"),
])
def test_a_mask_sample_must_fit_its_input(tmp_path, old, new, word):
    text = (ROOT / "manifests" / "sam3-image.yaml").read_text()
    assert old in text
    m = one(tmp_path, text.replace(old, new, 1))
    assert word in m["msg"] and m["path"].endswith(".sample"), m[0]


@pytest.mark.parametrize("command", [["port", "m.yaml"], ["generate", "m.yaml"], ["bench", "m.yaml"],
                                     ["e2e", "m.yaml"], ["predict", "-m", "m.yaml", "--image", "x.png", "--text", "a"],
                                     ["report", "m.yaml"]])
def test_every_command_validates_the_manifest_first(tmp_path, command):
    """What port, generate, bench, e2e, predict and report read goes through validation: exit 2, the located
    lines, nothing written."""
    for name in ("templates",):
        shutil.copytree(ROOT / name, tmp_path / name)
    (tmp_path / "m.yaml").write_text(MINIMAL.replace("atol: 2.0e-4", "atol: .inf"))
    before = tree(tmp_path)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "sam3spec", *command], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert LINE.match(result.stderr.splitlines()[0]) and "atol" in result.stderr.splitlines()[0], result.stderr
    assert tree(tmp_path) == before
