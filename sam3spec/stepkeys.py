"""What each step's result depends on, as named ingredients (label -> sha256): the step cache (cache.py)
keys a step on them and, when a key changes, names the ingredients that did ("converter `linear.default`").

export / reference: the model section (builder, arguments, vocabulary), each constructor override, the
weights (seed, initialised parameters, checkpoint path, size and content), the sizes and dims the component's
shapes use, its inputs, outputs and adapter (with its source), every substitution (with its source), the
templates of its script, sam3spec's runtime code it runs and the versions of what it imports. compile: the
exported program (its sha256), the target entry (TVM target, pipeline, options; the host CPU for `mcpu: host`),
the pipeline's source, the tuning records the component applies, every converter of an op the program contains (with its source), template, code and
versions. verify: the library, weights file and reference it loads (their sha256), each output's tolerance,
the device, where it runs, template, code and versions. Nothing here imports torch or TVM."""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from importlib import metadata
from pathlib import Path

from sam3spec import sources
from sam3spec.plan import ComponentPlan, Plan
from sam3spec.runtime import reference
from sam3spec.runtime.artifacts import recorded, sha256_file, write_json
from sam3spec.runtime.checkpoint import checkpoint_path
from sam3spec.runtime.loader import LIBRARY_FILE

TEMPLATES = {"export": ("export.py.j2", "model.py.j2"), "reference": ("export.py.j2", "model.py.j2"),
             "compile": ("compile.py.j2",), "verify": ("verify.py.j2",)}
RUNTIME = {"export": "sam3spec.runtime.export", "reference": "sam3spec.runtime.export",
           "compile": "sam3spec.runtime.compile", "verify": "sam3spec.runtime.verify"}
VERSIONS = {"export": ("torch", "sam3", "timm", "numpy"),
            "reference": ("torch", "sam3", "timm", "numpy", "apache-tvm", "apache-tvm-ffi"),
            "compile": ("torch", "apache-tvm", "apache-tvm-ffi", "numpy"),
            "verify": ("apache-tvm", "apache-tvm-ffi", "numpy")}
CHECKPOINT_HASHES = ".checkpoint-sha256.json"  # under build/: a checkpoint's hash by path, size and mtime


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def _code(modules: list[str], whole: bool = False) -> str:
    return sources.digest(sources.closure(modules, whole))


def _module(dotted: str) -> str:
    return dotted.partition(":")[0]


def version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _common(step: str, root: Path) -> dict:
    """Template, sam3spec runtime code and versions: what every step has."""
    out = {f"template `{name}`": sources.digest([root / "templates" / name]) for name in TEMPLATES[step]}
    for path in sources.closure([RUNTIME[step]]):
        out[f"sam3spec code `{_relative(path)}`"] = sources.digest([path])
    out["Python version"] = digest(list(sys.version_info[:2]))
    out.update({f"version of {p}": digest(version(p)) for p in VERSIONS[step]})
    return out


def _relative(path: Path) -> str:
    parts = path.parts
    return "/".join(parts[len(parts) - 1 - parts[::-1].index("sam3spec"):]) if "sam3spec" in parts else str(path)


def checkpoint_sha256(path: Path, memo_dir: Path) -> str:
    """The checkpoint's sha256, remembered under build/ by path, size and mtime (gigabytes: hashed once)."""
    stat = path.stat()
    memo_file = memo_dir / CHECKPOINT_HASHES
    memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    entry = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    if entry not in memo:
        memo[entry] = sha256_file(path)
        write_json(memo_file, memo)
    return memo[entry]


def weights(plan: Plan, root: Path) -> str:
    w = plan.model["weights"]
    ckpt = checkpoint_path(w, root / plan.manifest_dir)
    source = {"seed": w["seed"], "initialise": w.get("initialise"), "loader": w.get("loader") if ckpt else None}
    if ckpt is None and w.get("without_checkpoint"):
        source["without_checkpoint"] = w["without_checkpoint"]
    if ckpt is not None:
        source["checkpoint"] = {"path": str(ckpt.resolve()), "bytes": ckpt.stat().st_size,
                                "sha256": checkpoint_sha256(ckpt, root / "build")}
    return digest(source)


def for_export(plan: Plan, root: Path, comp: ComponentPlan, step: str = "export", target: str | None = None) -> dict:
    model = plan.model
    autocast = plan.autocast_by_target().get(target) if target else None
    out = {"model section": digest({k: v for k, v in model.items()
                                    if k not in ("substitutions", "weights", "overrides")})}
    out.update({f"override of `{cls}`": digest(kw) for cls, kw in model.get("overrides", {}).items()})
    out["weights"] = weights(plan, root)
    out.update({f"size `{name}`": digest(value) for name, value in comp.sizes.items()})
    out.update({f"dim `{name}`": digest(d) for name, d in comp.dims.items()})
    out[f"inputs of `{comp.name}`"] = digest(comp.inputs)
    out[f"outputs of `{comp.name}`"] = digest(comp.outputs)
    out[f"adapter `{comp.adapter}`"] = digest([comp.adapter, _code([_module(comp.adapter)])])
    if model.get("view"):
        out[f"view `{model['view']}`"] = digest([model["view"], _code([_module(model["view"])])])
    if autocast:
        out[f"autocast {autocast['dtype']} on {autocast['device']}"] = digest(autocast)
    for sub in model.get("substitutions", []):
        entry = {k: v for k, v in sub.items() if k != "reason"}
        out[f"substitution `{sub['name']}`"] = digest([entry, _code([_module(sub["with"])], ":" not in sub["replace"])])
    return out | _common(step, root)


def for_compile(plan: Plan, root: Path, comp: ComponentPlan, target: str, export_record: dict) -> dict:
    entry = plan.targets[target]
    out = {"exported program": digest(export_record.get("artifacts", {}).get("program.pt2", {}).get("sha256"))}
    out[f"target `{target}`"] = digest({k: entry.get(k) for k in ("target", "pipeline", "pipeline_options", "pass_config")})
    if "host" in json.dumps(entry["target"]):
        out["host CPU"] = digest(host_cpu())
    out[f"pipeline `{entry['pipeline']}`"] = _code([_module(entry["pipeline"])])
    if entry.get("tuning"):  # the records this component's compile applies (tune writes them; a review lands them)
        records = plan.tuning_dir(root, target, comp.name)
        files = sorted(p for p in records.glob("*.json")) if records.is_dir() else []
        out[f"tuning records of `{comp.name}`"] = sources.digest(files) if files else digest(None)
    program_ops = set(export_record.get("ops", []))
    for op, fn in plan.converters.items():
        if op in program_ops:
            out[f"converter `{op}`"] = digest([fn, _code([_module(fn)])])
    return out | _common("compile", root)


def for_verify(plan: Plan, root: Path, comp: ComponentPlan, target: str, out_dir: Path, rpc: str | None) -> dict:
    entry = plan.targets[target]
    files = {"library": LIBRARY_FILE[entry["target"]["kind"]], "weights file": "params.bin",
             "reference": reference.FILE}
    out = {label: digest((recorded(out_dir, name)[0] or {}).get("sha256")) for label, name in files.items()}
    out.update({f"tolerance of `{comp.name}.{name}`": digest(tol)
                for name, tol in plan.scaled_tolerances(comp, target).items()})
    out[f"device of `{target}`"] = digest(entry["target"])
    if entry.get("reduced_precision"):
        out[f"reduced-precision rule of `{target}`"] = digest(entry["reduced_precision"])
    out["where it runs"] = digest(f"rpc {rpc}" if rpc else [platform.system(), platform.machine(), platform.node()])
    return out | _common("verify", root)


def for_reference(plan: Plan, root: Path, comp: ComponentPlan, compile_record: dict, target: str | None = None) -> dict:
    """The `reference` step (port --verify-only): the export's ingredients and the library's params.json."""
    params = compile_record.get("artifacts", {}).get("params.json", {}).get("sha256")
    return {**for_export(plan, root, comp, "reference", target), "params.json": digest(params)}


def host_cpu() -> str:
    """The CPU `mcpu: host` compiles for: its model name and feature flags."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        block = cpuinfo.read_text().split("\n\n")[0]
        keep = [line for line in block.splitlines() if line.split(":")[0].strip() in ("model name", "flags", "Features")]
        return "\n".join(keep)
    return f"{platform.machine()} {platform.processor()}"
