"""`tune` through TVM's own RPC tracker on loopback: a tracker and a CPU RPC server on 127.0.0.1, a few trials of
the tiny model's heaviest scoring_box_head task, then compile with the records (kernels counted from them) and
the library verified against PyTorch's reference; and re-tuning one task rewrites only that task's record."""

import json
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT

COMPONENT = "scoring_box_head"
KEY = "sam3spec-loopback"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def tracker():
    """`python -m tvm.exec.rpc_tracker` and one `python -m tvm.exec.rpc_server --tracker ... --key KEY`."""
    from tvm import rpc

    port, server_port = _free_port(), _free_port()
    procs = [subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port",
                               str(port), "--port-end", str(port + 1)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)]
    time.sleep(2)
    procs.append(subprocess.Popen([sys.executable, "-m", "tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{port}",
                                   "--key", KEY, "--host", "127.0.0.1", "--port", str(server_port), "--port-end",
                                   str(server_port + 1)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        for _ in range(60):
            if any(proc.poll() is not None for proc in procs):
                pytest.fail("the RPC tracker or server exited at start")
            try:
                if KEY in rpc.connect_tracker("127.0.0.1", port).summary().get("queue_info", {}):
                    break
            except Exception:  # noqa: BLE001 - the tracker is still starting
                pass
            time.sleep(1)
        else:
            pytest.fail("the RPC server did not register with the tracker in 60 s")
        yield f"127.0.0.1:{port}"
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)


def _tune(address: str, records, *extra):
    return subprocess.run([sys.executable, "-m", "sam3spec", "tune", "manifests/sam3-image-tiny.yaml", "-c",
                           COMPONENT, "--tracker", address, "--key", KEY, "--records", str(records), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=1800)


@pytest.fixture(scope="module")
def tuned(tiny_port, tracker, tmp_path_factory):
    """Two tasks tuned through the tracker (4 trials each), every best record kept (--keep-slower): (process,
    tune.json, dir)."""
    records = tmp_path_factory.mktemp("records")
    proc = _tune(tracker, records, "--tasks", "2", "--trials", "4", "--keep-slower")
    result = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / COMPONENT / "tune.json").read_text())
    return proc, result, records / COMPONENT


def test_tune_measures_on_the_tracker_and_writes_records(tuned):
    proc, result, records = tuned
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert result["status"] == "ok" and result["tracker"]["key"] == KEY
    assert len(result["tasks"]) == 2
    for task in result["tasks"]:
        assert task["flops"] > 0 and task["kept"]
        assert task["rules_ms"] > 0 and task["tuned_ms"] > 0  # both measured by the RPC server's device
    assert "task 1/2" in proc.stderr and "GFLOP/s" in proc.stderr  # progress
    assert len((records / "database_workload.json").read_text().splitlines()) == 2
    assert len((records / "database_tuning_record.json").read_text().splitlines()) == 2


def test_compile_applies_the_records_and_the_library_verifies(tuned, tiny_plan, tmp_path):
    from sam3spec.runtime import compile as compile_step, verify

    _, _, records = tuned
    src = ROOT / "build" / "sam3-image-tiny" / "cpu" / COMPONENT
    out = tmp_path / COMPONENT
    out.mkdir()
    for name in ("program.pt2", "export.json", "reference.npz", "reference.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    entry = tiny_plan.targets["cpu"]
    compile_step.run(component=COMPONENT, target=entry["target"], pipeline=entry["pipeline"],
                     converters=tiny_plan.converters, dynamic=bool(tiny_plan.component(COMPONENT).dims),
                     out_dir=str(out), records=str(records))
    compiled = json.loads((out / "compile.json").read_text())
    assert compiled["status"] == "ok", compiled.get("error")
    assert compiled["records"]["kernels"] == 2
    verify.run(component=COMPONENT, target=entry["target"],
               tolerances=tiny_plan.scaled_tolerances(tiny_plan.component(COMPONENT), "cpu"), out_dir=str(out))
    verified = json.loads((out / "verify.json").read_text())
    assert verified["status"] == "ok" and all(o["ok"] for o in verified["outputs"]), verified


@pytest.mark.parametrize("which", [0, 1])
def test_retuning_one_task_rewrites_only_its_record(tuned, tmp_path, which):
    """Either task re-tuned (the database hands records out by run time, not in the file's order): its record
    line replaced, every other line of both files as it was."""
    import tvm_ffi
    from tvm.s_tir import meta_schedule as ms

    from sam3spec.pipelines import records as records_lib
    from sam3spec.runtime import tune

    _, _, records = tuned
    copy = tmp_path / COMPONENT
    shutil.copytree(records, copy)
    before = {name: (copy / name).read_text().splitlines() for name in (records_lib.WORKLOADS, records_lib.RECORDS)}
    first = records_lib.database(copy).get_all_tuning_records()[which]
    again = ms.database.TuningRecord(first.trace, first.workload, [0.5], first.target, first.args_info)
    tune.merge(copy, [(first.workload.mod, again)])
    after = {name: (copy / name).read_text().splitlines() for name in before}
    assert after[records_lib.WORKLOADS] == before[records_lib.WORKLOADS]
    changed = set(before[records_lib.RECORDS]) ^ set(after[records_lib.RECORDS])
    assert len(changed) == 2 and len(after[records_lib.RECORDS]) == 2  # one line out, its new one in
    secs = [float(r.run_secs[0]) for r in records_lib.database(copy).get_all_tuning_records()
            if tvm_ffi.structural_equal(r.workload.mod, first.workload.mod)]
    assert secs == [pytest.approx(0.5)]


def test_tune_says_in_one_line_what_is_wrong_with_the_tracker(tiny_plan):
    proc = subprocess.run([sys.executable, "-m", "sam3spec", "tune", "manifests/sam3-image-tiny.yaml", "-c",
                           COMPONENT, "--tracker", f"127.0.0.1:{_free_port()}", "--key", KEY],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "no TVM RPC tracker answers there" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_tune_lists_the_tasks_when_asked_for_one_it_does_not_have(tiny_port, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "sam3spec", "tune", "manifests/sam3-image-tiny.yaml", "-c",
                           COMPONENT, "--task", "no_such_task", "--records", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    result = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / COMPONENT / "tune.json").read_text())
    assert proc.returncode == 1 and result["status"] == "failed"
    assert "no task no_such_task in scoring_box_head" in result["error"] and "fused_matmul" in result["error"]
    assert not any(tmp_path.iterdir())  # nothing written


def test_staged_tuning_builds_here_times_elsewhere_and_keeps_what_beat_the_rules(tiny_port, tmp_path):
    """`--stage`, the device's `staged_timing` (here: this CPU, a process per task), `--collect`: the records hold
    a task's best candidate exactly where it ran faster than the rules' schedule in the same timing run, and a
    second --stage is the next round, its cost model trained on the first round's timings."""
    stage, records = tmp_path / "stage", tmp_path / "records"
    base = [sys.executable, "-m", "sam3spec", "tune", "manifests/sam3-image-tiny.yaml", "-c", COMPONENT,
            "--records", str(records)]
    early = subprocess.run(base + ["--collect", str(stage)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert early.returncode == 2 and f"no stage of {COMPONENT} there" in early.stderr
    staged = subprocess.run(base + ["--tasks", "1", "--trials", "4", "--stage", str(stage)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900)
    assert staged.returncode == 0, staged.stdout[-3000:] + staged.stderr[-3000:]
    plan = json.loads((stage / COMPONENT / "stage.json").read_text())
    assert plan["round"] == 1 and len(plan["tasks"]) == 1
    task = plan["tasks"][0]
    assert task["rules"] == "rules.so" and task["candidates"]
    timing = subprocess.run([sys.executable, "-m", "sam3spec.runtime.staged_timing", str(stage / COMPONENT)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert timing.returncode == 0, timing.stderr[-3000:]
    timings = json.loads((stage / COMPONENT / "timings.json").read_text())[task["name"]]
    assert set(timings) == {"rules.so", *(c["file"] for c in task["candidates"])}
    collected = subprocess.run(base + ["--collect", str(stage)], cwd=ROOT, capture_output=True, text=True,
                               timeout=300)
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    result = json.loads((ROOT / "build" / "sam3-image-tiny" / "cpu" / COMPONENT / "tune.json").read_text())
    entry = result["tasks"][0]
    ran = [v["secs"] for k, v in timings.items() if k != "rules.so" and "secs" in v]
    assert entry["candidates_ran"] == len(ran) and entry["rules_ms"] == pytest.approx(timings["rules.so"]["secs"] * 1e3)
    assert entry["tuned_ms"] == pytest.approx(min(ran) * 1e3)
    assert entry["kept"] == (min(ran) < timings["rules.so"]["secs"])
    assert (records / COMPONENT / "database_tuning_record.json").is_file() == entry["kept"]
    twice = subprocess.run(base + ["--collect", str(stage)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert twice.returncode == 2 and "collected already" in twice.stderr  # its timings would count twice
    again = subprocess.run(base + ["--tasks", "1", "--trials", "4", "--stage", str(stage)], cwd=ROOT,
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and json.loads((stage / COMPONENT / "stage.json").read_text())["round"] == 2
    assert f"cost model trained on {len(ran)} timings" in again.stderr
