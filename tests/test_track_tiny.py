"""Tracking on the reduced video model: SAM3's own video inference with every network on the compiled components,
against PyTorch under the manifest's tracking contract, on the pan and zoom clip `e2e-video` makes; the contract
failing when the memory attention's output is perturbed on one frame; bad input refused in one line."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import port_command
from PIL import Image

from sam3spec import cli, manifest, plan as plan_lib, tracking
from sam3spec.runtime import clip as clip_lib, model as model_lib, track_parity
from sam3spec.runtime.checkpoint import weights_source
from sam3spec.runtime.resolve import resolve

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = "manifests/sam3-video-tiny.yaml"
BUILD = ROOT / "build" / "sam3-video-tiny" / "cpu"
TEXT = {"name": "text", "text": "cat"}


def sam3spec(*args, timeout=1800):
    env = {"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "TVM_NUM_THREADS": "2"}
    return subprocess.run([sys.executable, "-m", "sam3spec", *args], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def video_plan():
    return plan_lib.make(manifest.load(ROOT / MANIFEST), ROOT)


@pytest.fixture(scope="module")
def ported(video_plan):
    """Every component of sam3-video-tiny on cpu (the step cache keeps what test_video_tiny ported)."""
    result = port_command(MANIFEST, "--target", "cpu")
    report = json.loads((BUILD / "report.json").read_text())
    assert {c["status"] for c in report["components"]} == {"verified"}, result.stdout[-3000:] + result.stderr[-3000:]
    return report


@pytest.fixture(scope="module")
def session(video_plan, ported):
    names = resolve(video_plan.track["app"]).components({})
    weights = weights_source(video_plan.model["weights"], ROOT / video_plan.manifest_dir)
    return tracking.Session(video_plan, video_plan.model, weights, BUILD, "cpu", names)


@pytest.fixture(scope="module")
def clip(video_plan, tmp_path_factory):
    spec = video_plan.track["e2e"]["clip"]
    with Image.open(model_lib.package_file(spec["image"])) as im:
        frames = clip_lib.pan_and_zoom(im.convert("RGB"), spec["frames"], tuple(spec["size"]))
    folder = tmp_path_factory.mktemp("clip")
    clip_lib.write_frames(frames, folder)
    return clip_lib.open_clip(str(folder))


def test_e2e_video_meets_the_contract_on_every_frame(ported):
    """`e2e-video` as nox runs it: a text prompt and a click, TVM against PyTorch on every frame, with objects
    tracked on every frame (a run that tracked nothing would compare nothing)."""
    result = sam3spec("e2e-video", MANIFEST)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-3000:]
    out = BUILD / "e2e-video"
    for name in ("text", "click"):
        parity = json.loads((out / name / "parity.json").read_text())
        assert parity["ok"] and len(parity["frames"]) == parity["frame_count"] == 6, name
        assert all(row["same_ids"] and row["ids_tvm"] for row in parity["frames"]), name
        assert min(row["min_mask_iou"] for row in parity["frames"]) >= 0.99
        assert (out / name / "iou.svg").read_text().startswith("<svg")
        tracks = json.loads((out / name / "tracks.json").read_text())
        assert tracks["objects"] and len(tracks["tracked_frames"]) == 6
        with Image.open(out / name / "overlay.gif") as gif:
            assert gif.n_frames == 6
        labels = np.asarray(Image.open(out / name / "masks" / "00003.png"))
        assert {int(v) - 1 for v in np.unique(labels) if v} == set(parity["frames"][3]["ids_tvm"])
    text = json.loads((out / "text" / "parity.json").read_text())
    assert len(text["tracks"]["tvm"]) >= 2  # detections become tracks, new ones join on later frames


def test_no_pytorch_network_runs_while_the_stand_ins_are_installed(session, clip):
    """Every module of SAM3's video model that holds parameters: none is called while tracking on the compiled
    components; restore() gives the model back its own modules."""
    net = session.net
    before = {name: id(m) for name, m in net.named_modules()}
    called = []
    hooks = [m.register_forward_hook(lambda m, i, o, name=name: called.append(name))
             for name, m in net.named_modules() if any(True for _ in m.parameters(recurse=False))]
    session.thresholds(TEXT)
    installed = session.app.compiled(net, session.run_compiled, session.plan.sizes, session.bpe)
    try:
        results = session.app.track(net, clip.source, TEXT, 0)
    finally:
        session.app.restore(installed)
        for hook in hooks:
            hook.remove()
    assert called == [] and all(r.ids for r in results.values())
    assert {name: id(m) for name, m in net.named_modules()} == before


def test_the_contract_fails_when_memory_attention_is_perturbed_on_one_frame(session, clip):
    """The memory attention's output replaced by its negative on frame 2 (its first call there; the tracker's
    track_step says which frame it works on): the parity check, given the unperturbed PyTorch run, fails from
    that frame, not before. The text prompt: its frames go through the detector and the tracker's memory both."""
    app, net, prompt = session.app, session.net, TEXT
    session.thresholds(prompt)
    reference = app.track(net, clip.source, prompt, 0)
    state = {"frame": None, "perturbed": False}
    run, track_step = session.run_compiled, net.tracker.track_step

    def perturbed(name, *tensors):
        out = run(name, *tensors)
        if name == "memory_attention" and state["frame"] == 2 and not state["perturbed"]:
            state["perturbed"] = True
            return (-out[0],)
        return out

    def noting_the_frame(*args, **kwargs):
        state["frame"] = kwargs["frame_idx"]
        return track_step(*args, **kwargs)

    installed = app.compiled(net, perturbed, session.plan.sizes, session.bpe)
    net.tracker.track_step = noting_the_frame
    try:
        results = app.track(net, clip.source, prompt, 0)
    finally:
        del net.tracker.track_step
        app.restore(installed)
    assert state["perturbed"]
    parity = track_parity.compare(reference, results, session.plan.track["contract"])
    bad = [row["frame"] for row in parity["frames"] if not row["ok"]]
    assert not parity["ok"] and bad and bad[0] == 2, parity["frames"]


def test_parity_on_hand_made_frames():
    from sam3spec.apps.sam3_video import FrameResult

    mask = np.zeros((1, 20, 20), bool)
    mask[0, 2:10, 2:10] = True
    shifted = np.zeros_like(mask)
    shifted[0, 2:10, 3:11] = True
    box = np.array([[2, 2, 10, 10]], np.float32)
    same = {0: FrameResult([1], mask, box, np.array([0.5], np.float32))}
    contract = {"mask_iou": 0.99, "box_px": 1.0, "score": 0.01}
    assert track_parity.compare(same, same, contract)["ok"]
    moved = {0: FrameResult([1], shifted, box + [1, 0, 1, 0], np.array([0.5], np.float32))}
    row = track_parity.compare(same, moved, contract)["frames"][0]
    assert not row["ok"] and row["min_mask_iou"] == pytest.approx(56 / 72) and row["max_box_linf_px"] == 1.0
    other = {0: FrameResult([2], mask, box, np.array([0.5], np.float32))}
    result = track_parity.compare(same, other, contract)
    assert not result["ok"] and result["tracks"] == {"pytorch": [1], "tvm": [2]}


def _frames(folder: Path, sizes):
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (i * 40, 80, 120)).save(folder / f"{i:05d}.jpg")
    return folder


@pytest.mark.parametrize("case", ["missing", "empty", "sizes", "unreadable_video", "unreadable_frame", "frame",
                                  "box", "point_and_text"])
def test_bad_input_gets_one_line_and_exit_2(case, tmp_path, capsys):
    args = ["track", "-m", MANIFEST]
    good = _frames(tmp_path / "good", [(64, 48)] * 3)
    video, extra, says = str(good), ["--text", "cat"], None
    if case == "missing":
        video, says = str(tmp_path / "nowhere"), "no such frame folder or video file"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        video, says = str(tmp_path / "empty"), "no frames in it"
    elif case == "sizes":
        video, says = str(_frames(tmp_path / "sizes", [(64, 48), (64, 48), (48, 64)])), "frames differ in size"
    elif case == "unreadable_video":
        (tmp_path / "clip.gif").write_bytes(b"GIF89a not really")
        video, says = str(tmp_path / "clip.gif"), "not a readable video"
    elif case == "unreadable_frame":
        (good / "00003.jpg").write_bytes(b"\xff\xd8 broken")
        says = "00003.jpg: not a readable image"
    elif case == "frame":
        extra, says = ["--text", "cat", "--frame", "3"], "--frame 3 is outside the clip (frames 0 to 2)"
    elif case == "box":
        extra, says = ["--box", "10,10,80,40"], "box 10,10,80,40 is not inside the 64x48 image"
    else:
        extra, says = ["--text", "cat", "--point", "5,5"], "prompts the tracker alone"
    code = cli.main([*args, "--video", video, *extra])  # in this process: the checks come before any model
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sam3spec track: ") and says in lines[0], err


def test_bench_times_one_tracked_frame_against_pytorch(ported):
    result = sam3spec("bench", MANIFEST, "--track", "--frames", "2")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    bench = json.loads((BUILD / "bench_track.json").read_text())
    assert [row["name"] for row in bench["prompts"]] == ["text", "click"]
    for row in bench["prompts"]:
        assert row["frames"] == 2 and row["objects"]["tvm"] >= 1
        assert row["pytorch_ms"] > 0 and row["tvm_ms"] > 0
        assert row["ratio"] == pytest.approx(row["tvm_ms"] / row["pytorch_ms"], rel=1e-2)
    assert "| text (text 'cat') |" in (BUILD / "bench_track.md").read_text()


def test_bench_frames_beyond_the_clip_are_refused(ported, capsys):
    assert cli.main(["bench", MANIFEST, "--track", "--frames", "7"]) == 2
    assert capsys.readouterr().err.strip() == "sam3spec bench: --frames 7: the e2e clip has 6 frames"
    assert cli.main(["bench", MANIFEST, "--frames", "2"]) == 2
    assert "--frames is for --track" in capsys.readouterr().err
