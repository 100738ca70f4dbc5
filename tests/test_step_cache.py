"""The step cache on the reduced SAM3: a step runs again exactly when one of its ingredients changed, says
which, and a killed or tampered-with build is never taken for a complete one."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import port_command

from sam3spec import port, stepkeys
from sam3spec.plan import STEPS
from sam3spec.runtime.artifacts import ArtifactError

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path("build") / "sam3-image-tiny" / "cpu"
COPIED = ("scoring_box_head", "decoder")  # a component with `tokens` in its shapes and one without


def copy_repo(tmp_path: Path, components=(), code: bool = False) -> Path:
    """manifests/, templates/ (and sam3spec/ when `code`) and the tiny port's build of `components`."""
    for name in ("manifests", "templates", *(["sam3spec"] if code else [])):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in components:
        shutil.copytree(ROOT / BUILD / name, tmp_path / BUILD / name)
    return tmp_path


def report(root: Path) -> dict:
    return {c["name"]: c for c in json.loads((root / BUILD / "report.json").read_text())["components"]}


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def dry_run(root: Path, *args, env=None) -> dict[str, dict[str, str]]:
    """`port --dry-run` in `root` (its own sam3spec/): component -> step -> `cached` or why it would run."""
    result = subprocess.run([sys.executable, "-m", "sam3spec", "port", "manifests/sam3-image-tiny.yaml",
                             "--dry-run", *args], cwd=root, capture_output=True, text=True, timeout=300,
                            env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin", **(env or {})})
    assert result.returncode == 0, result.stderr[-3000:]
    out: dict[str, dict[str, str]] = {}
    for line in result.stdout.splitlines():
        parts = line.split(": ", 2)
        if len(parts) == 3 and parts[1] in (*STEPS, "reference"):
            out.setdefault(parts[0], {})[parts[1]] = parts[2]
    return out


def direct(decisions: dict[str, dict[str, str]]) -> dict[str, set[str]]:
    """Per component, the steps that would run because of their own ingredients (not only after another)."""
    return {name: {s for s, why in steps.items() if why != "cached" and not why.startswith("runs: after ")}
            for name, steps in decisions.items()}


def test_a_second_port_reuses_every_step(tiny_port):
    result, first = tiny_port
    again = port_command("manifests/sam3-image-tiny.yaml", "--target", "cpu")
    assert again.returncode == 0, again.stdout[-3000:]
    for name, entry in report(ROOT).items():
        assert entry["status"] == "verified" and entry["this_run"] == dict.fromkeys(STEPS, "cached"), name
    assert "This run: 0 step(s) ran, 30 cached" in (ROOT / BUILD / "report.md").read_text()


# (ingredient kind, file to edit, old, new, the steps that must run directly per copied component)
MANIFEST, BASE = Path("manifests/sam3-image-tiny.yaml"), Path("manifests/sam3-image.yaml")
INGREDIENTS = [
    ("tolerance", MANIFEST, "  - name: vit_trunk\n",
     "  - name: scoring_box_head\n    outputs: [{name: pred_boxes, atol: 2.0e-4}]\n  - name: vit_trunk\n",
     {"scoring_box_head": {"verify"}, "decoder": set()}),
    ("component entry", BASE, "      - {name: presence, shape: [dec_layers, 1, 1], dtype: float32}",
     "      - {name: presence, shape: [dec_layers, 1, 1], dtype: float32, sample: {kind: normal, std: 2.0}}",
     {"scoring_box_head": {"export"}, "decoder": set()}),
    ("model section", MANIFEST, "VETextEncoder: {layers: 2}", "VETextEncoder: {layers: 3}",
     {"scoring_box_head": {"export"}, "decoder": {"export"}}),
    ("size", MANIFEST, "  tokens: 576", "  tokens: 577", {"scoring_box_head": set(), "decoder": {"export"}}),
    ("dim", BASE, "{name: prompt_len, min: 35, max: 49,", "{name: prompt_len, min: 35, max: 48,",
     {"scoring_box_head": {"export"}, "decoder": {"export"}}),
    ("substitution", BASE, "    when: export\n    reason: ViTDet's RoPE", "    when: build\n    reason: ViTDet's RoPE",
     {"scoring_box_head": {"export"}, "decoder": {"export"}}),
    ("substitution source", Path("sam3spec/substitutes/rope_real.py"), '"""', '"""Touched. ',
     {"scoring_box_head": {"export"}, "decoder": {"export"}}),
    ("converter entry", BASE, "with: sam3spec.converters.like_dtype:zeros_like",
     "with: sam3spec.converters.like_dtype:full_like", {"scoring_box_head": set(), "decoder": {"compile"}}),
    ("converter source", Path("sam3spec/converters/linear_2d.py"), '"""', '"""Touched. ',
     {"scoring_box_head": {"compile"}, "decoder": {"compile"}}),
    ("converter of an op neither program has", Path("sam3spec/converters/grid_sample.py"), '"""', '"""Touched. ',
     {"scoring_box_head": set(), "decoder": set()}),
    ("target entry", BASE, "pipeline: sam3spec.pipelines.cpu:pipeline",
     "pipeline: sam3spec.pipelines.cpu:pipeline\n    pass_config: {}",
     {"scoring_box_head": {"compile"}, "decoder": {"compile"}}),
    ("template", Path("templates/verify.py.j2"), "import argparse", "import argparse  # touched",
     {"scoring_box_head": {"verify"}, "decoder": {"verify"}}),
    ("adapter source", Path("sam3spec/adapters/sam3_image.py"), '"""', '"""Touched. ',
     {"scoring_box_head": {"export"}, "decoder": {"export"}}),
    ("pipeline source", Path("sam3spec/pipelines/attention.py"), '"""', '"""Touched. ',
     {"scoring_box_head": {"compile"}, "decoder": {"compile"}}),
    ("runtime source", Path("sam3spec/runtime/verify.py"), '"""', '"""Touched. ',
     {"scoring_box_head": {"verify"}, "decoder": {"verify"}}),
    ("weights (seed)", BASE, "    seed: 0", "    seed: 1", {"scoring_box_head": {"export"}, "decoder": {"export"}}),
]


@pytest.fixture(scope="module")
def repo_copy(tiny_port, tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("repo"), COPIED, code=True)


def test_unchanged_copy_is_cached(repo_copy):
    assert dry_run(repo_copy, *[a for c in COPIED for a in ("-c", c)]) == {
        name: dict.fromkeys(STEPS, "cached") for name in COPIED}


def test_jobs_decide_as_one_at_a_time_and_bad_counts_are_refused(repo_copy):
    names = [a for c in COPIED for a in ("-c", c)]
    original = (repo_copy / MANIFEST).read_text()
    edit(repo_copy / MANIFEST, "VETextEncoder: {layers: 2}", "VETextEncoder: {layers: 3}")  # both re-export
    try:
        assert dry_run(repo_copy, *names, "-j", "2") == dry_run(repo_copy, *names, "-j", "1") != {
            name: dict.fromkeys(STEPS, "cached") for name in COPIED}
    finally:
        (repo_copy / MANIFEST).write_text(original)
    for args, env, word in ((["-j", "0"], {}, "'0' is not a whole number"),
                            ([], {"SAM3SPEC_JOBS": "abc"}, "$SAM3SPEC_JOBS='abc'"),
                            ([], {"SAM3SPEC_JOBS": "0"}, "$SAM3SPEC_JOBS='0'")):
        result = subprocess.run([sys.executable, "-m", "sam3spec", "port", MANIFEST,
                                 "--dry-run", *names, *args], cwd=repo_copy, capture_output=True, text=True,
                                timeout=300, env={"PYTHONPATH": str(repo_copy), "PATH": "/usr/bin:/bin", **env})
        assert result.returncode == 2 and word in result.stderr and not result.stdout.strip(), result


@pytest.mark.parametrize("kind,path,old,new,expected", INGREDIENTS, ids=[i[0] for i in INGREDIENTS])
def test_each_ingredient_reruns_the_right_steps(repo_copy, kind, path, old, new, expected):
    original = (repo_copy / path).read_text()
    edit(repo_copy / path, old, new)
    try:
        decisions = dry_run(repo_copy, *[a for c in COPIED for a in ("-c", c)])
    finally:
        (repo_copy / path).write_text(original)
    assert direct(decisions) == expected, decisions
    for name, steps in expected.items():  # what follows a step that runs waits for its result
        later = STEPS[STEPS.index(min(steps, key=STEPS.index)) + 1:] if steps else ()
        assert all(decisions[name][s] != "cached" for s in later), decisions[name]


def test_a_checkpoint_is_an_ingredient(repo_copy, tmp_path):
    checkpoint = tmp_path / "sam3.pt"
    checkpoint.write_bytes(b"weights")
    decisions = dry_run(repo_copy, "-c", "scoring_box_head", env={"SAM3SPEC_CHECKPOINT": str(checkpoint)})
    assert decisions["scoring_box_head"]["export"] == "runs: weights changed"
    memo = json.loads((repo_copy / "build" / stepkeys.CHECKPOINT_HASHES).read_text())
    assert list(memo.values()) == [hashlib.sha256(b"weights").hexdigest()]  # hashed once, remembered


@pytest.mark.parametrize("package,steps", [("torch", {"export", "compile"}), ("apache-tvm", {"compile", "verify"}),
                                           ("sam3", {"export"}), ("apache-tvm-ffi", {"compile", "verify"})])
def test_each_version_is_an_ingredient_of_the_steps_that_import_it(tiny_port, tiny_plan, monkeypatch, package, steps):
    real = stepkeys.version
    monkeypatch.setattr(stepkeys, "version", lambda p: "0.0.0-other" if p == package else real(p))
    decisions = port.component(tiny_plan, ROOT, "scoring_box_head", "cpu", STEPS, dry_run=True)
    ran = {s for s, why in decisions.items() if why != "cached" and not why.startswith("after ")}
    assert ran == steps, decisions
    assert decisions[min(steps, key=STEPS.index)] == f"version of {package} changed"


def test_force_runs_every_step(repo_copy):
    assert dry_run(repo_copy, "-c", "scoring_box_head", "--force") == {
        "scoring_box_head": dict.fromkeys(STEPS, "runs: --force")}


def test_a_tolerance_edit_reruns_only_that_verify(tiny_port, tmp_path):
    root = copy_repo(tmp_path, ("scoring_box_head", "sam_prompt_encoder"))
    edit(root / MANIFEST, "  - name: vit_trunk\n",
         "  - name: scoring_box_head\n    outputs: [{name: pred_boxes, atol: 2.0e-4}]\n  - name: vit_trunk\n")
    result = port_command("manifests/sam3-image-tiny.yaml", "-c", "scoring_box_head", "-c", "sam_prompt_encoder",
                          cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entries = report(root)
    assert entries["scoring_box_head"]["this_run"] == {
        "export": "cached", "compile": "cached", "verify": "tolerance of `scoring_box_head.pred_boxes` changed"}
    assert entries["sam_prompt_encoder"]["this_run"] == dict.fromkeys(STEPS, "cached")
    assert "scoring_box_head: verify: runs: tolerance of `scoring_box_head.pred_boxes` changed" in result.stdout
    assert {e["status"] for e in entries.values()} == {"verified"}
    assert [o["atol"] for o in entries["scoring_box_head"]["outputs"] if o["name"] == "pred_boxes"] == [2e-4]


def test_a_wrong_masked_fill_fails_verification_and_recompiles_only_its_components(tiny_port, tiny_plan, tmp_path):
    """A converter that fills masked positions with 0.0 instead of their value: with masks sampled as SAM3
    makes them, every component whose program has the op fails verification; the rest stay cached."""
    names = [c.name for c in tiny_plan.components]
    root = copy_repo(tmp_path, names)
    (root / "faulty").mkdir()
    (root / "faulty" / "masked_fill_zero.py").write_text(
        '"""masked_fill that fills 0.0, whatever the value: a fault verification must catch."""\n'
        "from tvm import relax\n\n\n"
        "def masked_fill_scalar(node, importer):\n"
        "    x, mask, _value = importer.retrieve_args(node)[:3]\n"
        "    return importer.block_builder.emit(relax.op.where(mask, relax.const(0.0, x.ty.dtype), x))\n")
    edit(root / BASE, "with: sam3spec.converters.masked_fill_scalar:masked_fill_scalar",
         "with: masked_fill_zero:masked_fill_scalar")
    result = port_command("manifests/sam3-image-tiny.yaml", cwd=root, pythonpath=(ROOT, root / "faulty"))
    assert result.returncode == 1, result.stdout[-3000:]
    entries = report(root)
    with_op = {n for n in names if "masked_fill.Scalar" in
               json.loads((root / BUILD / n / "export.json").read_text())["ops"]}
    assert with_op == {"geometry_encoder", "fusion_encoder", "decoder", "segmentation_head"}
    for name, entry in entries.items():
        if name in with_op:
            run = entry["this_run"]
            assert run["export"] == "cached" and run["compile"] == "converter `masked_fill.Scalar` changed", run
            assert run["verify"].startswith("library changed"), run
            assert entry["status"].startswith("verify failed: AssertionError: outputs outside tolerance"), name
        else:
            assert entry["this_run"] == dict.fromkeys(STEPS, "cached") and entry["status"] == "verified", name


def test_a_port_killed_mid_compile_redoes_only_that_step(tiny_port, tmp_path):
    root = copy_repo(tmp_path)
    name = "sam_prompt_encoder"
    out = root / BUILD / name
    out.mkdir(parents=True)
    for keep in ("export.json", "program.pt2", "reference.npz"):  # the export of the tiny port, as it is
        shutil.copy2(ROOT / BUILD / name / keep, out / keep)
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "2", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "sam3spec", "port", "manifests/sam3-image-tiny.yaml", "-c", name],
                            cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if f"{name}: compiling for" in line:  # the compile step's own process, past the Relax import
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-30:])
    assert not (out / "compile.json").exists() and not (out / "lib.so").exists()
    result = port_command("manifests/sam3-image-tiny.yaml", "-c", name, cwd=root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    entry = report(root)[name]
    assert entry["this_run"] == {"export": "cached", "compile": "no result from an earlier run",
                                 "verify": "no result from an earlier run"}
    assert entry["status"] == "verified"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the killed run's temporaries


def test_a_flipped_bit_or_a_swapped_library_is_an_error_naming_the_file(tiny_port, tmp_path):
    from sam3spec.runtime.loader import Component

    root = copy_repo(tmp_path, ("sam_prompt_encoder", "scoring_box_head"))
    out = root / BUILD / "sam_prompt_encoder"
    target = {"kind": "llvm", "num-cores": 2}
    params = bytearray((out / "params.bin").read_bytes())
    params[len(params) // 2] ^= 0x04
    (out / "params.bin").write_bytes(params)
    with pytest.raises(ArtifactError, match=r"params\.bin.*sha256 differs"):
        Component(out, target)
    result = port_command("manifests/sam3-image-tiny.yaml", "-c", "sam_prompt_encoder", "--verify-only", cwd=root)
    assert result.returncode == 1
    status = report(root)["sam_prompt_encoder"]["status"]
    assert status.startswith("verify failed: ArtifactError: ") and "params.bin" in status, status
    result = port_command("manifests/sam3-image-tiny.yaml", "-c", "sam_prompt_encoder", cwd=root)
    assert result.returncode == 0, result.stdout[-3000:]
    entry = report(root)["sam_prompt_encoder"]
    assert entry["this_run"]["compile"] == "params.bin is not the file that was recorded (its sha256 differs)"
    assert entry["status"] == "verified"
    shutil.copy(root / BUILD / "scoring_box_head" / "lib.so", out / "lib.so")
    with pytest.raises(ArtifactError, match=r"lib\.so"):
        Component(out, target)
