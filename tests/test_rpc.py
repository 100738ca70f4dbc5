"""Verification over TVM's RPC (the path a Linux machine uses to verify Metal on a Mac), tested on loopback:
a real `python -m tvm.exec.rpc_server` on 127.0.0.1 and the CPU target (same code path, another device)."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import port_command

from sam3spec.runtime import reference, verify
from sam3spec.runtime.artifacts import record_files

ROOT = Path(__file__).resolve().parents[1]
CPU = {"kind": "llvm", "num-cores": 2}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def rpc_server():
    """HOST:PORT of a TVM RPC server in its own process, as a Mac would run it. One per test: the server
    serves one session at a time, and a session lives as long as its objects in the client's process."""
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                               "--port", str(port), "--port-end", str(port + 1)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert server.poll() is None, server.stderr.read()
        time.sleep(0.2)
    yield f"127.0.0.1:{port}"
    os.killpg(server.pid, signal.SIGTERM)   # the server and the worker processes it forks
    server.wait(timeout=30)


def _copy(tiny_port, name: str, tmp_path: Path) -> Path:
    """The tiny cpu port's artifacts of one component, in a folder of its own."""
    source = ROOT / "build" / "sam3-image-tiny" / "cpu" / name
    assert json.loads((source / "compile.json").read_text())["status"] == "ok", tiny_port[0].stderr[-2000:]
    out = tmp_path / name
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("program.pt2", "verify.json"))
    return out


def _tolerances(tiny_plan, name: str) -> dict:
    return tiny_plan.scaled_tolerances(tiny_plan.component(name), "cpu")


@pytest.mark.parametrize("name", ["vit_trunk", "geometry_encoder"])  # static shapes; dynamic dims at 2 sizes
def test_verify_over_rpc_matches_pytorch(tiny_port, tiny_plan, rpc_server, tmp_path, name):
    out = _copy(tiny_port, name, tmp_path)
    verify.run(component=name, target=CPU, tolerances=_tolerances(tiny_plan, name), out_dir=str(out),
               rpc=rpc_server)
    result = json.loads((out / "verify.json").read_text())
    assert result["status"] == "ok" and result["where"] == f"RPC server {rpc_server}"
    local = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / name / "verify.json").read_text())
    for remote_out, local_out in zip(result["outputs"], local["outputs"]):
        assert remote_out["ok"] and remote_out["max_abs"] < 1e-3, remote_out
        # the same library on the same kind of CPU: the same numbers as verifying in this process
        assert remote_out["max_abs"] == pytest.approx(local_out["max_abs"], rel=1e-3, abs=1e-7)


def test_verify_over_rpc_fails_on_a_wrong_reference(tiny_port, tiny_plan, rpc_server, tmp_path):
    out = _copy(tiny_port, "vit_trunk", tmp_path)
    ref = reference.load(out / reference.FILE)
    for case in ref["cases"]:
        case["outputs"][0] = case["outputs"][0] + np.float32(0.01)
    reference.save(out / reference.FILE, ref["input_names"], ref["output_names"], ref["cases"])
    export = json.loads((out / "export.json").read_text())  # recorded as export's own file: a wrong reference,
    record_files(export, out, [reference.FILE])              # not a tampered one (that is an ArtifactError)
    (out / "export.json").write_text(json.dumps(export))
    with pytest.raises(AssertionError, match="outputs outside tolerance: trunk"):
        verify.run(component="vit_trunk", target=CPU, tolerances=_tolerances(tiny_plan, "vit_trunk"),
                   out_dir=str(out), rpc=rpc_server)
    result = json.loads((out / "verify.json").read_text())
    assert result["status"] == "failed" and result["outputs"][0]["max_abs"] == pytest.approx(0.01, rel=0.05)


def test_port_verify_only_over_rpc(tiny_port, rpc_server, tmp_path):
    """`port --verify-only --rpc`: what a Linux user runs against a Mac, here against loopback and the cpu
    libraries, in a copy of the repository's build/: one component as compiled (weights and reference there),
    one without them (rebuilt from the seed and checked against the library's params.json), then every
    output compared on the server's device."""
    for name in ("manifests", "templates"):
        shutil.copytree(ROOT / name, tmp_path / name)
    names = ("sam_prompt_encoder", "scoring_box_head")
    for name in names:
        shutil.copytree(ROOT / "build" / "sam3-image-tiny" / "cpu" / name,
                        tmp_path / "build" / "sam3-image-tiny" / "cpu" / name,
                        ignore=shutil.ignore_patterns("verify.json", "reference.json"))
    for stale in ("params.bin", reference.FILE):
        (tmp_path / "build" / "sam3-image-tiny" / "cpu" / "scoring_box_head" / stale).unlink()
    result = port_command("manifests/sam3-image-tiny.yaml", "--target", "cpu", "-c", names[0], "-c", names[1],
                          "--verify-only", "--rpc", rpc_server, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "build" / "sam3-image-tiny" / "cpu" / "report.json").read_text())
    assert {c["name"]: (c["status"], c["where"]) for c in report["components"]} == {
        name: ("verified", f"RPC server {rpc_server}") for name in names}
    rebuilt = json.loads((tmp_path / "build" / "sam3-image-tiny" / "cpu" / "scoring_box_head" / "reference.json")
                         .read_text())
    assert rebuilt["status"] == "ok" and rebuilt["params"]["identical"] > 0 and rebuilt["params"]["close"] == 0
    assert not (tmp_path / "build" / "sam3-image-tiny" / "cpu" / "sam_prompt_encoder" / "reference.json").exists()


def test_a_bad_rpc_address_is_one_line(tiny_port):
    result = subprocess.run([sys.executable, "-m", "sam3spec", "port", "manifests/sam3-image-tiny.yaml",
                             "--target", "cpu", "-c", "scoring_box_head", "--verify-only", "--rpc", "nohost"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and result.stderr.startswith("--rpc nohost: need HOST:PORT")
    assert len(result.stderr.strip().splitlines()) == 1


def test_nothing_answering_at_the_rpc_address_is_one_line(tiny_port):
    result = subprocess.run([sys.executable, "-m", "sam3spec", "port", "manifests/sam3-image-tiny.yaml",
                             "--target", "cpu", "-c", "scoring_box_head", "--rpc", f"127.0.0.1:{_free_port()}"],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "no TVM RPC server answers there: nothing listens" in result.stderr and "python -m tvm.exec.rpc_server" in result.stderr
