"""Step 5: gather each component's step results into build/<manifest>/<target>/report.json and report.md."""

from __future__ import annotations

import json
from pathlib import Path

from sam3spec.plan import STEPS, Plan
from sam3spec.cache import CACHED
from sam3spec.runtime.artifacts import atomic_path, read_result, write_json


def entry(component: str, directory: Path, this_run: dict | None = None) -> dict:
    """One component's report entry: status is `verified`, `<step> failed: <error>` for the first failure,
    or `compiled` where the target's device was not reachable (`not_verified` says why, `how` what to run).
    this_run: step -> `cached` or why it ran, from the port that wrote the report."""
    steps, status, failed = {}, "verified", False
    for name in (*STEPS[:-1], "reference", STEPS[-1]):  # reference: rebuilt where verified (port --verify-only)
        result = read_result(directory, name)
        if result is None:
            if status == "verified" and name != "reference":
                status, failed = f"{name} not run", True
            continue
        steps[name] = result
        if result["status"] == "skipped" and status == "verified":
            status = "compiled"
        elif result["status"] != "ok" and status == "verified":
            status, failed = f"{name} failed: {result.get('error', result['status'])}", True
    verify, compiled = steps.get("verify", {}), steps.get("compile", {})
    return {
        "name": component,
        "status": status,
        "failed": failed,
        "not_verified": verify.get("reason") if status == "compiled" else None,
        "how": verify.get("how") if status == "compiled" else None,
        "where": verify.get("where"),
        "pipeline": compiled.get("pipeline"),
        "schedule": compiled.get("schedule"),
        "sources": compiled.get("sources", []),
        "kernels": compiled.get("kernels"),
        "metal_check": compiled.get("metal_check"),
        "from_records": (compiled.get("records") or {}).get("kernels"),
        "rule": verify.get("rule"),
        "seconds": {name: steps[name]["seconds"] for name in steps if "seconds" in steps[name]},
        "outputs": [{k: o.get(k) for k in ("name", "max_abs", "max_rel", "atol", "rtol", "autocast_max_abs", "ok")
                     if k in o or k != "autocast_max_abs"}
                    for o in verify.get("outputs", [])],
        "export": {k: steps.get("export", {}).get(k) for k in
                   ("substitutions", "exported_vs_original_max_abs")},
        "this_run": this_run,
    }


def this_run(c: dict) -> str:
    """`cached` when no step ran; else each step that ran and why, in one cell."""
    run = c.get("this_run")
    if not run:
        return ""
    groups: list[list] = []  # consecutive steps that ran for the same reason: "export, compile: ..."
    for step, why in run.items():
        if why == CACHED:
            continue
        if groups and groups[-1][1] == why:
            groups[-1][0].append(step)
        else:
            groups.append([[step], why])
    return "; ".join(f"{', '.join(steps)}: {why}" for steps, why in groups) if groups else CACHED


def _pipeline_lines(report: dict) -> list[str]:
    """Which pipeline (and named choices) compiled the components, and which schedule rules it used."""
    pipelines = {json.dumps(c["pipeline"], sort_keys=True) for c in report["components"] if c.get("pipeline")}
    lines = [f"Pipeline: `{p['name']}` with {json.dumps(p['options'], sort_keys=True) if p['options'] else 'no options'}."
             for p in map(json.loads, sorted(pipelines))]
    rules: dict[str, int] = {}
    passed_over = 0
    for c in report["components"]:
        for rule, n in ((c.get("schedule") or {}).get("rules") or {}).items():
            rules[rule] = rules.get(rule, 0) + n
        passed_over += len((c.get("schedule") or {}).get("passed_over") or [])
    if rules:
        lines.append("GPU schedule rules used (functions): " + ", ".join(f"{r} {n}" for r, n in sorted(rules.items()))
                     + (f"; {passed_over} rule applications passed over (compile.json: schedule.passed_over)."
                        if passed_over else "."))
    return lines


def summary(report: dict) -> list[str]:
    """The lines above the table: counts, what was not verified and why, how to verify it, the pipeline."""
    comps = report["components"]
    lines = [f"{report['verified']} of {len(comps)} components verified"
             + "".join(f" on {w}" for w in sorted({c['where'] for c in comps if c.get('where')}))
             + (f", {report['failed']} failed" if report.get("failed") else "") + "."]
    waiting = [c for c in comps if c["status"] == "compiled"]
    for reason in sorted({c["not_verified"] for c in waiting}):
        names = [c["name"] for c in waiting if c["not_verified"] == reason]
        how = next(c["how"] for c in waiting if c["not_verified"] == reason)
        lines.append(f"**Not verified** ({len(names)} compiled only: {', '.join(names)}): {reason}. "
                     + (f"To verify, {how}." if how else ""))
    runs = [why for c in comps for why in (c.get("this_run") or {}).values()]
    if runs:
        cached = sum(why == CACHED for why in runs)
        lines.append(f"This run: {len(runs) - cached} step(s) ran, {cached} cached (the `this run` column says "
                     "why a step ran; `port --force` runs them all).")
    sources = sorted({s for c in comps for s in c.get("sources", [])})
    if sources:
        lines.append("Kernel source for review: " + ", ".join(f"`<component>/{s}`" for s in sources) + ".")
    return lines + _pipeline_lines(report) + _kernel_lines(comps)


def _kernel_lines(comps: list[dict]) -> list[str]:
    """Kernels on the matrix units, the Metal limits check, and the reduced-precision rule, where present."""
    lines = []
    counted = [c for c in comps if c.get("kernels")]
    if counted:
        instruction = counted[0]["kernels"]["instruction"]
        lines.append(f"Kernels on the matrix units (`{instruction}`): "
                     f"{sum(c['kernels']['matrix_unit'] for c in counted)} of "
                     f"{sum(c['kernels']['kernels'] for c in counted)} (the `kernels` column, per component).")
    checked = [c for c in comps if c.get("metal_check")]
    if checked:
        bad = [c for c in checked if not c["metal_check"]["ok"]]
        limits = checked[0]["metal_check"]["limits"]
        largest = {k: max(c["metal_check"]["largest"][k] for c in checked) for k in limits}
        lines.append(f"Metal limits, a static check of the MSL (at most {limits['buffers']} buffer arguments, "
                     f"{limits['threadgroup_bytes']} bytes of threadgroup memory and {limits['threads']} threads per "
                     f"threadgroup, no double): {len(checked) - len(bad)} of {len(checked)} components pass; the "
                     f"largest kernel values are {largest['buffers']} buffers, {largest['threadgroup_bytes']} bytes, "
                     f"{largest['threads']} threads."
                     + "".join(f" **{c['name']}**: {'; '.join(c['metal_check']['problems'][:3])}." for c in bad))
    tuned = [c for c in comps if c.get("from_records") is not None]
    if tuned:
        lines.append(f"Kernels from tuning records (tuning/, MetaSchedule; the rest from the pipeline's rules): "
                     f"{sum(c['from_records'] for c in tuned)} in {len(tuned)} components (the `kernels` column).")
    rules = sorted({c["rule"] for c in comps if c.get("rule")})
    lines += [f"Reduced precision: an output passes when its {rule} (the `autocast max abs` column)." for rule in rules]
    return lines


def _kernels_cell(c: dict) -> str:
    k, tuned = c.get("kernels"), c.get("from_records")
    parts = [f"{k['kernels']} ({k['matrix_unit']} matrix)"] if k else []
    return ", ".join(parts + ([f"{tuned} from records"] if tuned is not None else []))


def markdown(report: dict) -> str:
    numbers = ("max_abs", "max_rel") + (("autocast_max_abs",) if any(
        o.get("autocast_max_abs") is not None for c in report["components"] for o in c["outputs"]) else ())
    lines = [f"# {report['manifest']} on {report['target']}", "", *[l + "\n" for l in summary(report)],
             f"| component | status | output | {' | '.join(n.replace('_', ' ') for n in numbers)} | atol | rtol "
             "| kernels | export s | compile s | verify s | this run |",
             "|---|---|---|" + "---|" * len(numbers) + "---|---|---|---|---|---|---|"]
    for c in report["components"]:
        secs = [f"{c['seconds'][s]:.1f}" if s in c["seconds"] else "" for s in STEPS]
        outs = c["outputs"] or [{"name": "", "max_abs": None, "max_rel": None, "atol": None, "rtol": None}]
        for i, o in enumerate(outs):
            num = [f"{o[k]:.2e}" if o.get(k) is not None else "" for k in numbers]
            tol = [f"{o[k]:g}" if o[k] is not None else "" for k in ("atol", "rtol")]
            status = c["status"].replace("|", "\\|").replace("\n", " ")[:200] if i == 0 else ""
            run = this_run(c).replace("|", "\\|") if i == 0 else ""
            lines.append(f"| {c['name'] if i == 0 else ''} | {status} | {o['name']} | {' | '.join(num)} | "
                         f"{' | '.join(tol)} | {_kernels_cell(c) if i == 0 else ''} | "
                         f"{' | '.join(secs if i == 0 else ['', '', ''])} | {run} |")
    return "\n".join(lines) + "\n"


def write(plan: Plan, root: Path, target: str, components: list[str], decisions: dict | None = None) -> dict:
    """decisions: component -> step -> `cached` or why it ran (port's), shown in the `this run` column."""
    build = plan.build_dir(root, target)
    report = {"manifest": plan.name, "target": target,
              "components": [entry(name, build / name, (decisions or {}).get(name)) for name in components]}
    report["verified"] = sum(c["status"] == "verified" for c in report["components"])
    report["failed"] = sum(c["failed"] for c in report["components"])
    write_json(build / "report.json", report)
    with atomic_path(build / "report.md") as tmp:
        tmp.write_text(markdown(report))
    return report


def bench_markdown(bench: dict) -> str:
    setting = bench["components"][0].get("pytorch", "") if bench["components"] else ""
    where = (f"{bench['cpu']}; PyTorch {setting}; every call waited for." if "cuda" in setting
             else f"{bench['cpu']}, {bench['threads']} threads for both.")
    settle = next((f"a {r['settle_s']:g} s wait, " for r in bench["components"] if r.get("settle_s")), "")
    lines = [f"# {bench['manifest']} on {bench['target']}: TVM vs PyTorch eager", "",
             f"{where} Medians over turns alternating PyTorch and TVM"
             f"{' and ONNX Runtime' if any('onnxruntime' in r for r in bench['components']) else ''} "
             f"(in each turn {settle}an untimed call, then the timed one). FLOPs: multiply-adds x 2 of matmuls, "
             "convolutions and attention (torch.utils.flop_counter).", "",
             "| component | TVM ms | PyTorch ms | TVM / PyTorch | GFLOP | TVM GFLOP/s | PyTorch GFLOP/s | repeats |",
             "|---|---|---|---|---|---|---|---|"]
    tf32 = all("ratio_tf32" in r for r in bench["components"]) and bench["components"]
    if tf32:  # float32 on a GPU: strict fp32 above, TF32 (a second alternating series) in two more columns
        lines[-2:] = [lines[-2] + " PyTorch TF32 ms | TVM / PyTorch TF32 |", lines[-1] + "---|---|"]
    ort = [r for r in bench["components"] if "onnxruntime" in r]
    if ort:  # ONNX Runtime, a third runtime in the same alternating turns
        lines[-2:] = [lines[-2] + " ONNX Runtime ms | TVM / ONNX Runtime |", lines[-1] + "---|---|"]
    for r in bench["components"]:
        lines.append(f"| {r['component']} | {r['tvm_median_s'] * 1e3:.1f} | {r['torch_median_s'] * 1e3:.1f} | "
                     f"{r['ratio']:.2f} | {r['flops'] / 1e9:.1f} | {r['tvm_gflops']:.1f} | {r['torch_gflops']:.1f} | "
                     f"{r['repeats']} |" + (f" {r['torch_tf32_median_s'] * 1e3:.1f} | {r['ratio_tf32']:.2f} |" if tf32 else "")
                     + ((f" {r['ort_median_s'] * 1e3:.1f} | {r['ratio_ort']:.2f} |" if "ort_median_s" in r
                         else f" {r.get('onnxruntime', {}).get('status', '')} | |") if ort else ""))
    total_tvm = sum(r["tvm_median_s"] for r in bench["components"])
    total_torch = sum(r["torch_median_s"] for r in bench["components"])
    ran = [r for r in ort if "ort_median_s" in r]
    lines.append(f"| all | {total_tvm * 1e3:.1f} | {total_torch * 1e3:.1f} | {total_tvm / total_torch:.2f} | | | | |"
                 + (f" {sum(r['torch_tf32_median_s'] for r in bench['components']) * 1e3:.1f} | "
                    f"{sum(r['tvm_median_s_tf32_run'] for r in bench['components']) / sum(r['torch_tf32_median_s'] for r in bench['components']):.2f} |"
                    if tf32 else "")
                 + ((f" {sum(r['ort_median_s'] for r in ran) * 1e3:.1f} | "
                     f"{sum(r['tvm_median_s'] for r in ran) / sum(r['ort_median_s'] for r in ran):.2f} |" if ran else " | |")
                    if ort else ""))
    if ort:
        lines += ["", "ONNX Runtime: the same exported program through torch.onnx (dynamo), CPU execution provider, "
                  f"ORT_ENABLE_ALL, {bench['threads']} intra-op threads; its `all` sums the components it ran."]
        lines += [f"- {r['component']}: max abs difference to PyTorch {r['onnxruntime']['max_abs_vs_pytorch']:.2e}"
                  if r["onnxruntime"]["status"] == "ok" else
                  f"- {r['component']}: {r['onnxruntime']['status']}: {r['onnxruntime']['reason']}" for r in ort]
    return "\n".join(lines) + "\n"


def write_bench(plan: Plan, root: Path, target: str, results: list[dict], cpu: str, threads: int) -> dict:
    bench = {"manifest": plan.name, "target": target, "cpu": cpu, "threads": threads, "components": results}
    build = plan.build_dir(root, target)
    write_json(build / "bench.json", bench)
    with atomic_path(build / "bench.md") as tmp:
        tmp.write_text(bench_markdown(bench))
    return bench


def parity_markdown(parity: dict) -> str:
    c = parity["contract"]
    lines = [f"# {parity['manifest']} on {parity['target']}: end to end, TVM vs PyTorch", "",
             f"Image {parity['image']} ({parity['image_size'][0]}x{parity['image_size'][1]}), weights: "
             f"{parity['weights']}. Every query is compared (threshold 0); detections are matched one to one "
             f"on mask IoU (Hungarian). Contract: mask IoU >= {c['mask_iou']}, box L-inf <= {c['box_px']} px, "
             f"|score difference| <= {c['score']}, the same count above {parity['threshold']}.", "",
             "| prompt | path | matched | min mask IoU | mean mask IoU | max box L-inf px | max score diff "
             "| count at threshold (PyTorch / TVM) | top score | TVM s | PyTorch s | result |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in parity["prompts"]:
        m = row["metrics"]
        result = "pass" if row["ok"] else "FAIL: " + "; ".join(row["failures"].values())
        lines.append(f"| {row['name']} | {row['path']} | {m['matched']} | {m['min_mask_iou']:.4f} "
                     f"| {m['mean_mask_iou']:.4f} | {m['max_box_linf_px']:.3g} | {m['max_score_diff']:.2e} "
                     f"| {m['count_at_threshold']['pytorch']} / {m['count_at_threshold']['tvm']} "
                     f"| {m['max_score']['pytorch']:.3f} | {row['seconds']['tvm']:.1f} | {row['seconds']['pytorch']:.1f} | {result} |")
    passed = sum(row["ok"] for row in parity["prompts"])
    lines += ["", "Count at threshold: detections scoring above it (grounding); every mask (interactive, which has "
              "no threshold). TVM s / PyTorch s: the whole prompt, image encoding included, one run each (not a benchmark).",
              "", f"{passed} of {len(parity['prompts'])} prompts meet the contract. Side by side (PyTorch | TVM): "
              + ", ".join(f"`{row['side_by_side']}`" for row in parity["prompts"]) + ".", ""]
    return "\n".join(lines)


def write_parity(out_dir: Path, parity: dict) -> None:
    write_json(out_dir / "parity.json", parity)
    with atomic_path(out_dir / "parity.md") as tmp:
        tmp.write_text(parity_markdown(parity))
