"""End to end on the reduced SAM3: SAM3's own processor with every neural step on the compiled TVM modules,
compared with PyTorch under the manifest's parity contract, on the photograph scikit-image ships."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sam3spec.runtime import model as model_lib, parity, predict
from sam3spec.runtime import loader
from sam3spec.runtime.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "sam3-image-tiny" / "cpu"
PROMPTS = {"text": {"name": "text", "text": "cat"},
           "box": {"name": "box", "boxes": [[110, 10, 370, 290]]},
           "point": {"name": "point", "points": [[265, 235, 1]]},
           "text_and_boxes": {"name": "text_and_boxes", "text": "cat", "boxes": [[110, 10, 370, 290], [0, 0, 90, 80]]},
           "points_and_box": {"name": "points_and_box", "points": [[265, 235, 1], [40, 40, 0]],
                              "boxes": [[110, 10, 370, 290]]}}


@pytest.fixture(scope="module")
def app(tiny_plan):
    return resolve(tiny_plan.predict["app"])


@pytest.fixture(scope="module")
def photo(tiny_plan):
    image = tiny_plan.predict["e2e"]["image"]
    loaded, problem = predict.open_image(model_lib.package_file(image))
    assert problem is None
    return loaded


@pytest.fixture(scope="module")
def pytorch_detections(app, tiny_model, photo):
    """PyTorch, SAM3's own model and processor, every query (threshold 0), per prompt."""
    return {name: app.predict(tiny_model, photo, prompt, 0.0) for name, prompt in PROMPTS.items()}


@pytest.fixture(scope="module")
def compiled(app, tiny_plan, tiny_port):
    assert all(loader.compiled(BUILD / c.name) for c in tiny_plan.components), tiny_port[0].stderr[-3000:]
    return predict.compiled_model(app, model_cfg=tiny_plan.model, sizes=tiny_plan.sizes, build_dir=BUILD,
                                  target=tiny_plan.targets["cpu"]["target"],
                                  names=[c.name for c in tiny_plan.components])


def _contract(tiny_plan):
    return tiny_plan.predict["contract"], tiny_plan.predict["threshold"]


def test_the_compiled_glue_on_pytorch_components_is_sam3s_processor(app, tiny_plan, tiny_model, photo,
                                                                    pytorch_detections):
    """CompiledSam3Image driven by the PyTorch adapters gives what Sam3Image gives: the cut points, the
    padding of absent boxes and points, and the calls into SAM3's processor are right before TVM enters."""
    adapters = {c.name: resolve(c.adapter)(tiny_model).eval() for c in tiny_plan.components}
    calls = []

    def run(name, *tensors):
        calls.append(name)
        with torch.no_grad():
            return tuple(adapters[name](*tensors))

    glue = app.compiled(run, tiny_plan.sizes, model_lib.package_file(tiny_plan.model["vocabulary"]))
    for name, prompt in PROMPTS.items():
        calls.clear()
        ours, theirs = app.predict(glue, photo, prompt, 0.0), pytorch_detections[name]
        assert set(calls) == set(app.components(prompt)), name
        assert ours.path == theirs.path and ours.masks.shape == theirs.masks.shape, name
        assert np.abs(ours.scores - theirs.scores).max() <= 1e-6, name
        assert np.abs(ours.boxes - theirs.boxes).max() <= 1e-3, name
        assert (ours.masks != theirs.masks).mean() <= 1e-5, name  # a padded entry moves sums by ~1e-7


@pytest.mark.parametrize("name", ["text", "box", "point", "text_and_boxes", "points_and_box"])
def test_tvm_meets_the_parity_contract(name, app, tiny_plan, compiled, photo, pytorch_detections):
    contract, threshold = _contract(tiny_plan)
    tvm = app.predict(compiled, photo, PROMPTS[name], 0.0)
    result = parity.compare(pytorch_detections[name], tvm, threshold, contract)
    m = result["metrics"]
    assert result["ok"], result["failures"]
    assert m["matched"] == (3 if "point" in name else 200)
    assert m["min_mask_iou"] >= 0.99 and m["max_box_linf_px"] <= 1.0 and m["max_score_diff"] <= 0.01
    assert m["count_at_threshold"]["pytorch"] == m["count_at_threshold"]["tvm"]
    assert tvm.masks.shape[1:] == (photo.height, photo.width) and tvm.masks.any()


def _perturbed(run, component: str, output: int, change):
    def wrapped(name, *tensors):
        outs = list(run(name, *tensors))
        if name == component:
            outs[output] = change(outs[output])
        return tuple(outs)

    return wrapped


PERTURBATIONS = [  # prompt, component, output index, change, the contract entry that must fail
    ("text", "segmentation_head", 0, lambda t: t + 2.0 * torch.randn_like(t), "mask_iou"),
    ("box", "scoring_box_head", 1, lambda t: (t + 0.01).clamp(0, 1), "box_px"),
    ("text", "scoring_box_head", 0, lambda t: t + 0.1, "score"),
    ("point", "sam_mask_decoder", 0, lambda t: -t, "mask_iou"),
    ("point", "sam_mask_decoder", 1, lambda t: t + 0.05, "score"),
]


@pytest.mark.parametrize("prompt,component,output,change,fails", PERTURBATIONS,
                         ids=[f"{p[1]}-{p[4]}" for p in PERTURBATIONS])
def test_the_contract_fails_when_a_component_output_is_perturbed(prompt, component, output, change, fails, app,
                                                                  tiny_plan, compiled, photo, pytorch_detections):
    contract, threshold = _contract(tiny_plan)
    torch.manual_seed(0)
    run = compiled.run
    perturbed = app.compiled(_perturbed(run, component, output, change), tiny_plan.sizes,
                             model_lib.package_file(tiny_plan.model["vocabulary"]))
    result = parity.compare(pytorch_detections[prompt], app.predict(perturbed, photo, PROMPTS[prompt], 0.0),
                            threshold, contract)
    assert not result["ok"] and fails in result["failures"], result


def test_parity_metrics_on_hand_made_detections():
    from sam3spec.apps.sam3_image import Detections

    masks = np.zeros((2, 4, 4), dtype=bool)
    masks[0, :2, :2] = True
    masks[1, 2:, 2:] = True
    ref = Detections(masks, np.array([[0, 0, 2, 2], [2, 2, 4, 4]], np.float32), np.array([0.9, 0.2]), "grounding")
    swapped = Detections(masks[::-1].copy(), ref.boxes[::-1] + 0.5, np.array([0.25, 0.9]), "grounding")
    result = parity.compare(ref, swapped, 0.5, {"mask_iou": 0.99, "box_px": 1.0, "score": 0.01})
    m = result["metrics"]
    assert (m["matched"], m["matched_same_index"], m["min_mask_iou"]) == (2, 0, 1.0)  # Hungarian undoes the swap
    assert m["max_box_linf_px"] == 0.5 and m["max_score_diff"] == pytest.approx(0.05)
    assert set(result["failures"]) == {"score"}
    assert parity.mask_iou(np.zeros((1, 3, 3), bool), np.zeros((1, 3, 3), bool))[0, 0] == 1.0


# ---------------------------------------------------------------------------------------------------------
# the commands
# ---------------------------------------------------------------------------------------------------------


def sam3spec(*args, cwd=ROOT, timeout=1200):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "sam3spec", *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=timeout)


def test_predict_compare_writes_masks_boxes_overlay_and_parity(tiny_port, photo, tmp_path):
    image = tmp_path / "photo.png"
    photo.save(image)
    out = tmp_path / "out"
    result = sam3spec("predict", "-m", "manifests/sam3-image-tiny.yaml", "--image", str(image), "--text", "cat",
                      "--box", "110,10,370,290", "--compare", "--out", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    parity_json = json.loads((out / "parity.json").read_text())
    row = parity_json["prompts"][0]
    assert row["ok"] and row["path"] == "grounding" and row["metrics"]["matched"] == 200
    detections = json.loads((out / "prompt" / "detections.json").read_text())
    assert detections["detections"] and detections["weights"] == "random weights (seed 0)"
    for det in detections["detections"]:
        assert (out / "prompt" / det["mask"]).is_file() and len(det["box_xyxy"]) == 4
    from PIL import Image

    side = Image.open(out / "prompt" / "side_by_side.png")
    assert side.width == 2 * photo.width + 8 and side.height > photo.height
    assert "| prompt | path | matched |" in (out / "parity.md").read_text()


def test_predict_writes_outputs_without_compare(tiny_port, photo, tmp_path):
    image = tmp_path / "photo.jpg"
    photo.save(image)
    result = sam3spec("predict", "-m", "manifests/sam3-image-tiny.yaml", "--image", str(image),
                      "--point", "265,235", "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    detections = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert detections["path"] == "interactive" and len(detections["detections"]) == 1
    assert detections["prompt"]["points"] == [[265.0, 235.0, 1.0]]
    assert (tmp_path / "out" / "overlay.png").is_file()


BAD = [  # arguments after --image (None: a missing file), what the one line says
    (["--text", "cat"], "missing", "no such file"),
    (["--text", "cat"], "unreadable", "not a readable image"),
    (["--box", "100,10,500,200"], "photo", "is not inside the 451x300 image"),
    (["--box", "300,10,100,200"], "photo", "is not inside the 451x300 image"),
    (["--point", "5"], "photo", "--point '5': need x,y or x,y,label"),
    (["--point"], "photo", "argument --point: expected one argument"),
    (["--point", "500,20"], "photo", "outside the 451x300 image"),
    ([], "photo", "give a prompt"),
    (["--text", "cat", "--point", "20,20"], "photo", "points take the interactive path"),
    (["--box", "0,0,10,10"] * 9, "photo", "9 boxes but the compiled geometry_encoder takes at most 8"),
    (["--text", "cat", "--checkpoint", "/no/such.pt"], "photo", "checkpoint /no/such.pt: no such file"),
]


@pytest.mark.parametrize("extra,image,says", BAD, ids=[b[2][:30] for b in BAD])
def test_bad_input_gets_one_line_and_exit_2(extra, image, says, photo, tmp_path):
    path = tmp_path / "photo.png"
    if image == "photo":
        photo.save(path)
    elif image == "unreadable":
        path.write_text("not an image")
    result = sam3spec("predict", "-m", "manifests/sam3-image-tiny.yaml", "--image", str(path), *extra, timeout=300)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_artifacts_not_built_for_the_target_name_the_command(photo, tmp_path):
    for name in ("manifests", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    photo.save(tmp_path / "photo.png")
    for target, command in (("cpu", "nox -s port-cpu"), ("metal", "nox -s port-metal")):
        result = sam3spec("predict", "-m", "manifests/sam3-image-tiny.yaml", "--target", target,
                          "--image", "photo.png", "--text", "cat", cwd=tmp_path, timeout=300)
        assert result.returncode == 2
        line, = result.stderr.strip().splitlines()
        assert f"not built for {target}" in line and "vit_trunk" in line, line
        assert f"python -m sam3spec port manifests/sam3-image-tiny.yaml --target {target}" in line
        assert command in line


def test_artifacts_built_with_other_weights_are_refused(tiny_port, photo, tmp_path):
    checkpoint = tmp_path / "other.pt"
    checkpoint.write_bytes(b"\0" * 16)
    photo.save(tmp_path / "photo.png")
    result = sam3spec("predict", "-m", "manifests/sam3-image-tiny.yaml", "--image", str(tmp_path / "photo.png"),
                      "--text", "cat", "--checkpoint", str(checkpoint), timeout=300)
    assert result.returncode == 2
    line, = result.stderr.strip().splitlines()
    assert "holds random weights (seed 0), not checkpoint" in line
    assert f"SAM3SPEC_CHECKPOINT={checkpoint} python -m sam3spec port manifests/sam3-image-tiny.yaml" in line


def test_outputs_say_so_when_nothing_is_detected(photo, tmp_path):
    from sam3spec.apps.sam3_image import Detections

    none = Detections(np.zeros((0, photo.height, photo.width), bool), np.zeros((0, 4), np.float32),
                      np.zeros(0, np.float32), "grounding")
    summary = predict.write(tmp_path, photo, none, 0.5, {"target": "cpu"})
    assert summary["detections"] == [] and summary["shown"] == "no detection above 0.5"
    assert json.loads((tmp_path / "detections.json").read_text())["above_threshold"] == 0
    assert (tmp_path / "overlay.png").is_file()
