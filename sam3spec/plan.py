"""Step 2: turn a validated manifest into a plan: concrete shapes, per-output tolerances, and the files
each component and target needs (generated scripts and build directories)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sam3spec.manifest import Manifest

STEPS = ("export", "compile", "verify")


@dataclass
class ComponentPlan:
    name: str
    adapter: str
    inputs: list[dict]                 # shape entries are ints, or names of dynamic dims
    outputs: list[str]
    tolerances: dict[str, dict]        # output name -> {atol, rtol}, before any target scale
    dims: dict[str, dict]              # dynamic dims this component uses -> {min, max, example}
    targets: list[str]
    sizes: dict[str, int] = field(default_factory=dict)  # named static sizes its shapes use


@dataclass
class Plan:
    manifest: str                      # manifest path relative to the repository root
    name: str
    seed: int
    model: dict                        # model section plus the substitutions, as the runtime takes it
    converters: dict[str, str]
    targets: dict[str, dict]
    components: list[ComponentPlan] = field(default_factory=list)
    sizes: dict[str, int] = field(default_factory=dict)
    dims: dict[str, dict] = field(default_factory=dict)  # every declared dim: min, max, example
    predict: dict | None = None                          # the manifest's predict section, if any
    track: dict | None = None                            # the manifest's track section (video), if any

    def generated_dir(self, root: Path) -> Path:
        return root / "generated" / self.name

    def build_dir(self, root: Path, target: str) -> Path:
        return root / "build" / self.name / target

    def tuning_dir(self, root: Path, target: str, component: str) -> Path:
        """The component's MetaSchedule records for `target` (checked in, reviewed like generated/)."""
        return root / "tuning" / self.name / target / component

    def component(self, name: str) -> ComponentPlan:
        return next(c for c in self.components if c.name == name)

    @property
    def manifest_dir(self) -> str:
        return os.path.dirname(self.manifest) or "."

    def autocast_by_target(self) -> dict[str, dict]:
        """Target name -> {dtype, device} of PyTorch autocast for its reduced-precision rule, where it has one."""
        return {name: {"dtype": t["reduced_precision"]["autocast"], "device": t["reduced_precision"]["device"]}
                for name, t in self.targets.items() if t.get("reduced_precision")}

    def scaled_tolerances(self, component: ComponentPlan, target: str) -> dict[str, dict]:
        """The component's tolerances times the target's tolerance_scale (1 when absent)."""
        scale = self.targets[target].get("tolerance_scale", 1)
        return {name: {k: v * scale for k, v in tol.items()} for name, tol in component.tolerances.items()}


def make(manifest: Manifest, root: Path) -> Plan:
    data = manifest.data
    sizes = data.get("sizes", {})
    dims = {d["name"]: {k: d[k] for k in ("min", "max", "example")} for d in data.get("dims", [])}
    default_tol = data.get("tolerance", {"atol": 1e-4, "rtol": 1e-4})
    plan = Plan(
        manifest=os.path.relpath(manifest.path.resolve(), root.resolve()),
        name=data["name"],
        seed=data["model"]["weights"]["seed"],
        model={**data["model"], "substitutions": data.get("substitutions", [])},
        converters={c["op"]: c["with"] for c in data.get("converters", [])},
        targets={t["name"]: t for t in data["targets"]},
        sizes=dict(sizes),
        dims=dims,
        predict=data.get("predict"),
        track=data.get("track"),
    )
    for comp in data["components"]:
        inputs = []
        for inp in comp["inputs"]:
            shape = [sizes.get(s, s) if isinstance(s, str) else s for s in inp["shape"]]
            inputs.append({**inp, "shape": shape})
        used = {s for i in inputs for s in i["shape"] if isinstance(s, str)}
        tol = comp.get("tolerance", default_tol)
        plan.components.append(ComponentPlan(
            name=comp["name"],
            adapter=comp["adapter"],
            inputs=inputs,
            outputs=[o["name"] for o in comp["outputs"]],
            tolerances={o["name"]: {"atol": o.get("atol", tol["atol"]), "rtol": o.get("rtol", tol["rtol"])}
                        for o in comp["outputs"]},
            dims={name: dims[name] for name in dims if name in used},
            targets=comp.get("targets", list(plan.targets)),
            sizes={s: sizes[s] for i in comp["inputs"] for s in i["shape"] if isinstance(s, str) and s in sizes},
        ))
    return plan
