"""TVM's GPU pipeline for CUDA and Metal (legalize, fuse, dlight's Matmul/GEMV/Reduction/GeneralReduction/
Fallback rules, lower), with each choice a named keyword that manifests declare under a target's
``pipeline_options`` and compile.json records, so the Metal choices can be run on CUDA unchanged."""

from __future__ import annotations

import contextlib
import math
import re

import tvm
from tvm import relax, s_tir, tirx
from tvm.relax.backend.gpu_generic import pipeline as gpu_generic
from tvm.s_tir import dlight as dl
from tvm.s_tir.dlight.gpu import matmul as dlight_matmul

from sam3spec.pipelines import (dataflow_lower_passes, gpu_attention, intrinsics, long_reduction, prepack,
                                rewrite_pass, simt_matmul, sink_reshape, tensor_core)
from sam3spec.pipelines import records as records_step

_CONCAT = tvm.ir.Op.get("relax.concat")
RULES = ("Matmul", "GEMV", "Reduction", "GeneralReduction", "Fallback")


@relax.expr_functor.mutator
class _DropEmptyConcatOperands(relax.PyExprMutator):
    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not call.op.same_as(_CONCAT) or not isinstance(call.args[0], relax.Tuple):
            return call
        fields = list(call.args[0].fields)
        kept = [f for f in fields if not any(isinstance(d, tirx.IntImm) and d.value == 0
                                             for d in getattr(getattr(f, "ty", None), "shape", None) or [])]
        if len(kept) in (0, len(fields)):
            return call
        return relax.op.concat(kept, axis=call.attrs.axis)


def drop_empty_concat_operands() -> tvm.transform.Pass:
    """concat without its zero-size operands (SAM's ``coords[..., 2:]``): dlight's Fallback divides by zero
    fusing a zero-extent loop."""
    return rewrite_pass(_DropEmptyConcatOperands, "sam3spec.DropEmptyConcatOperands")


_CLIP = tvm.ir.Op.get("relax.clip")


@relax.expr_functor.mutator
class _ClipAsMinMax(relax.PyExprMutator):
    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        call = super().visit_call_(call)
        if not call.op.same_as(_CLIP):
            return call
        x, dtype = call.args[0], call.args[0].ty.dtype
        for bound, op in ((call.args[1], relax.op.maximum), (call.args[2], relax.op.minimum)):
            value = float(bound.value)
            if value not in (float("inf"), float("-inf")):
                x = op(x, relax.const(value, dtype))
        return x


def clip_as_min_max() -> tvm.transform.Pass:
    """clip(x, lo, hi) as minimum(maximum(x, lo), hi) with tensor constants: ToMixedPrecision fails on clip's
    scalar bounds ("Expected TensorType, but got T.float32")."""
    return rewrite_pass(_ClipAsMinMax, "sam3spec.ClipAsMinMax")


_ASTYPE = tvm.ir.Op.get("relax.astype")


@relax.expr_functor.mutator
class _NoFloat64(relax.PyExprMutator):
    def visit_call_(self, call):  # pylint: disable=arguments-renamed
        if any(_is_float64_constant(a) for a in call.args):
            call = relax.Call(call.op, [_as_float32(a) if _is_float64_constant(a) else a for a in call.args],
                              call.attrs, call.ty_args)
        call = super().visit_call_(call)
        if call.op.same_as(_ASTYPE) and str(call.attrs.dtype) == "float64":
            return relax.op.astype(call.args[0], "float32")
        return call


def _is_float64_constant(expr) -> bool:
    return isinstance(expr, tvm.ir.expr.Constant) and str(expr.ty.dtype) == "float64"


def _as_float32(const):
    """A float64 constant in float32: a scalar (``clip``'s bounds, a FloatImm) stays a scalar."""
    if isinstance(const, tirx.FloatImm):
        return tirx.FloatImm("float32", const.value)
    return relax.const(_numpy(const).astype("float32"), "float32")


def _numpy(const):
    """A Relax constant's value (a GenericConst holds ``value``, a tensor constant ``data``)."""
    import numpy as np

    return np.asarray(const.value.numpy() if hasattr(const.value, "numpy") else const.value)


def float64_as_float32() -> tvm.transform.Pass:
    """float64 arithmetic (the group_norm_f64 converter's statistics) in float32: Metal has no double type
    ("Cannot convert type float64 to Metal type"); GPU reductions are tree-shaped, not one long fp32 sum."""

    return rewrite_pass(_NoFloat64, "sam3spec.Float64AsFloat32")


class SimpleLoops(dl.ScheduleRule):
    """Last resort for a function no dlight rule schedules: in each block, the leading spatial loops go to
    the grid, the innermost of them split over blocks x 64 threads (blockIdx.x, threadIdx.x) and the next two
    out on blockIdx.y and blockIdx.z; the rest run in each thread. No fusing, so no affine-map proofs that
    symbolic shapes defeat. Correct, not fast: a leading loop of extent 1 (batch) must not leave the work to
    one thread (SAM's mask decoder attention took 3.6 s so on an H200)."""

    def apply(self, func, target, _tunable):
        sch = s_tir.Schedule(func)
        for block in sch.get_child_blocks(sch.get_sblock("root")):
            loops = sch.get_loops(block)
            spatial = []
            for loop in loops:
                if not _spatial_only(sch, block, loop):
                    break
                spatial.append(loop)
            spatial = [l for l in spatial if not _extent_one(sch, l)] or spatial[:1]
            if spatial:
                bx, tx = sch.split(spatial[-1], factors=[None, 64])
                for loop, axis in zip(reversed(spatial[:-1]), ("blockIdx.y", "blockIdx.z")):
                    if _fits_grid(sch, loop):
                        sch.bind(loop, axis)
            else:
                tx = sch.add_unit_loop(block)
                bx = sch.add_unit_loop(tx)
            sch.bind(bx, "blockIdx.x")
            sch.bind(tx, "threadIdx.x")
        return sch


def _extent_one(sch, loop) -> bool:
    extent = sch.get(loop).extent
    return isinstance(extent, tirx.IntImm) and extent.value == 1


def _fits_grid(sch, loop) -> bool:
    """Whether a loop may take blockIdx.y/z (at most 65535 on CUDA): a constant that fits, or a symbolic
    extent (the manifests' dynamic dims are prompt counts)."""
    extent = sch.get(loop).extent
    return not isinstance(extent, tirx.IntImm) or extent.value <= 65535


_get_sblock_realize = tvm.get_global_func("s_tir.schedule.GetSBlockRealize")


def _spatial_only(sch, block, loop) -> bool:
    """Whether `loop`'s variable feeds only spatial block iterators of `block`."""
    var = sch.get(loop).loop_var
    values = _get_sblock_realize(sch, block).iter_values
    return not any(iv.iter_type != tirx.IterVar.DataPar
                   and any(v.same_as(var) for v in tirx.analysis.undefined_vars(value))
                   for iv, value in zip(sch.get(block).iter_vars, values))


def _symbolic_thread_memory(sch) -> list[str]:
    """Buffers in thread (local) or threadgroup (shared) memory whose size is not a constant: Metal needs a
    compile-time bound for those (codegen_metal.cc: "requires a finite compile-time upper bound")."""
    found, pending = [], [sch.get_sblock("root")]
    while pending:
        block = pending.pop()
        pending.extend(sch.get_child_blocks(block))
        for buf in sch.get(block).alloc_buffers:
            if buf.scope().startswith(("local", "shared")) and not all(isinstance(d, tirx.IntImm) for d in buf.shape):
                found.append(f"{buf.name} ({buf.scope()})")
    return found


_THREAD = re.compile(r'T\.launch_thread\("(threadIdx\.[xyz])", (\w+)\)'
                     r'|T\.thread_binding\((?:0, )?(\w+), thread="(threadIdx\.[xyz])"\)')


def threads_per_block(func: tirx.PrimFunc) -> int | None:
    """The product of a scheduled function's threadIdx extents (its threads per block / threadgroup), from its
    TVMScript (``T.thread_binding`` loops, or TOPI's ``T.launch_thread``); 0 when one is symbolic, None when it
    binds no thread (TIR's DefaultGPUSchedule binds it later). MSL has no trace of it (a launch parameter):
    kernels.metal_check takes it from here."""
    extents = {}
    for launch_tag, launch_n, loop_n, loop_tag in _THREAD.findall(func.script()):
        tag, value = (launch_tag, launch_n) if launch_tag else (loop_tag, loop_n)
        if not value.isdigit():
            return 0
        extents[tag] = max(extents.get(tag, 1), int(value))
    return math.prod(extents.values()) if extents else None


def record_threads(target: tvm.target.Target, stats: dict | None) -> tvm.transform.Pass:
    """Each PrimFunc's threads_per_block into stats["threads"], once the rules have run; a function no rule
    scheduled gets the target's max_num_threads, which TIR's DefaultGPUSchedule binds it with."""
    default = int(target.attrs.get("max_num_threads", 0))

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.RecordThreads")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        if stats is not None:
            found = {gvar.name_hint: threads_per_block(func) for gvar, func in mod.functions_items()
                     if isinstance(func, tirx.PrimFunc)}
            stats["threads"] = {name: default if n is None else n for name, n in found.items()}
        return mod

    return _pass


@contextlib.contextmanager
def _metal_matmul(enabled: bool):
    """dl.gpu.Matmul first tries a tensorized schedule (MetalMatmul on Metal, MatmulTensorization's wmma for
    float16 on CUDA sm_70+) and takes its generic schedule when that declines. Disabled, MetalMatmul declines at
    once: a CUDA proxy of Metal's schedules needs that, since its simdgroup code cannot build for CUDA."""
    original = dlight_matmul.MetalMatmul.apply

    def declines(*_args, **_kwargs):
        raise NotImplementedError("MetalMatmul disabled (pipeline option metal_simdgroup_matmul: false)")

    if not enabled:
        dlight_matmul.MetalMatmul.apply = declines
    try:
        yield
    finally:
        dlight_matmul.MetalMatmul.apply = original


def schedule(target: tvm.target.Target, *, skip_failing_rules: bool, static_thread_memory: bool,
             last_resort: bool, metal_simdgroup_matmul: bool, simdgroup_f32_accumulate: str | None = None,
             tensor_core_min_extent: int | None = 32, long_reduction_matmul: bool = False,
             low_batch_gemv: int | None = None, stats: dict | None = None) -> tvm.transform.Pass:
    """dlight's rules in order on each PrimFunc, the first that applies wins (as dl.ApplyDefaultSchedule).
    skip_failing_rules: a rule that raises on a function is passed over, and the next one tried, instead of
    failing the compile (GEMV's outer reduction, GeneralReduction's 'bind' on padded windows).
    static_thread_memory: a schedule putting a symbolic-size buffer in thread/threadgroup memory is passed
    over likewise. last_resort: SimpleLoops for functions that no rule schedules. simdgroup_f32_accumulate
    ("metal" or "proxy"): simdgroup.SimdgroupMatmul first, for Metal or as its CUDA proxy."""
    first = []
    if simdgroup_f32_accumulate:  # imported here: its TVMScript intrinsics take seconds to parse
        from sam3spec.pipelines import simdgroup

        first.append(("SimdgroupMatmul", simdgroup.SimdgroupMatmul(proxy=simdgroup_f32_accumulate == "proxy")))
    if tensor_core_min_extent:
        first.append(("TensorCoreMatmul", tensor_core.TensorCoreMatmul(tensor_core_min_extent)))
    if long_reduction_matmul:
        first.append(("LongReductionMatmul", long_reduction.LongReductionMatmul()))
    if low_batch_gemv:
        first.append(("LowBatchGEMV", dl.gpu.LowBatchGEMV(low_batch_gemv)))
    rules = first + [(name, simt_matmul.SimtMatmul() if name == "Matmul" else getattr(dl.gpu, name)())
                     for name in RULES] + ([("SimpleLoops", SimpleLoops())] if last_resort else [])
    stats = {} if stats is None else stats
    used, passed_over = stats.setdefault("rules", {}), stats.setdefault("passed_over", [])

    def _one(name_hint, func):
        for name, rule in rules:
            try:
                sch = rule.apply(func, target, False)
            except Exception as exc:  # pylint: disable=broad-except
                if not skip_failing_rules:
                    raise
                passed_over.append(f"{name_hint}: {name} raised {type(exc).__name__}: "
                                   f"{str(exc).strip().splitlines()[-1][:160] if str(exc).strip() else ''}")
                continue
            if sch is None:
                continue
            symbolic = _symbolic_thread_memory(sch) if static_thread_memory else []
            if symbolic:
                passed_over.append(f"{name_hint}: {name} put symbolic-size {', '.join(symbolic)} in thread memory")
                continue
            used[name] = used.get(name, 0) + 1
            return sch.mod["main"].with_attr("tirx.is_scheduled", True)
        return None

    @tvm.transform.module_pass(opt_level=0, name="sam3spec.GPUSchedule")
    def _pass(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        updated = {}
        with _metal_matmul(metal_simdgroup_matmul):
            for gvar, func in mod.functions_items():
                if isinstance(func, tirx.PrimFunc) and not (func.attrs and func.attrs.get("tirx.is_scheduled")):
                    done = _one(gvar.name_hint, func)
                    if done is not None:
                        updated[gvar] = done
        for gvar, func in updated.items():
            mod[gvar] = func
        return mod

    return _pass


def pipeline(target: tvm.target.Target, dynamic_shapes: bool = False, stats: dict | None = None, *,
             lift_weight_transforms: bool = True, drop_empty_concat: bool = True, float64: bool = True,
             skip_failing_rules: bool = True,
             static_thread_memory: bool = False, last_resort: bool = True, metal_simdgroup_matmul: bool = True,
             simdgroup_f32_accumulate: str | None = None, tensor_core_min_extent: int | None = 32,
             long_reduction_matmul: bool = False, low_batch_gemv: int | None = None,
             schedule_as: dict | None = None, mixed_precision: str | None = None, records: str | None = None,
             fused_attention: bool = False, sink_reshapes: bool = False, stop_before_schedule: bool = False,
             schedule_only: bool = False) -> tvm.transform.Pass:
    """The GPU pipeline. Keywords (a target's ``pipeline_options``):
    lift_weight_transforms: weight-only work (the transposes ``linear`` makes) runs once, in
        ``main_transform_params``, not on every call (relax LiftTransformParams).
    drop_empty_concat: :func:`drop_empty_concat_operands`.
    float64: False gives :func:`float64_as_float32` (Metal).
    skip_failing_rules, static_thread_memory, last_resort: :func:`schedule`.
    metal_simdgroup_matmul: let dl.gpu.Matmul try TVM's MetalMatmul (float16 output) on Metal; off for a
        CUDA proxy of Metal's schedules (:func:`_metal_matmul`).
    tensor_core_min_extent: CUDA's float16 matmuls whose static extents are all at least this get
        :class:`sam3spec.pipelines.tensor_core.TensorCoreMatmul` (wmma, loads coalesced, attention's head
        dimension included); None: dlight's choice alone (its MatmulTensorization where it applies).
    long_reduction_matmul: :class:`sam3spec.pipelines.long_reduction.LongReductionMatmul` first: a few outputs
        over a long reduction (a few prompt tokens attending over the image) as one thread block per output.
    low_batch_gemv: dlight's LowBatchGEMV (this bucket) before its Matmul: matmuls whose only symbolic extent is
        the rows (a prompt's tokens) against constant weights, read as a GEMV.
    simdgroup_f32_accumulate: "metal": float16 x float16 -> float32 matmuls on simdgroup matrices
        (:mod:`sam3spec.pipelines.simdgroup`); "proxy": the same schedule with the intrinsics as plain TIR, for
        a CUDA target scheduled ``schedule_as`` Metal. Either needs the pass config
        ``tirx.disable_storage_rewrite`` (see the manifests).
    mixed_precision: "float16" runs matmuls and convolutions on float16 operands with float32 accumulation
        (relax ToMixedPrecision, before the weight casts are lifted), as PyTorch's autocast does; implies
        float64: False and :func:`clip_as_min_max` (ToMixedPrecision rejects float64 and clip's scalars).
    schedule_as: the target the rules schedule for, when not the one compiled for (``{kind: metal}`` on CUDA
        gives Metal's schedules, to check them numerically on an NVIDIA GPU).
    fused_attention: attention as one tensor-core kernel per shape (:mod:`sam3spec.pipelines.gpu_attention`),
        the scores kept on chip; CUDA, with mixed_precision float16 (it rounds q, k and v to float16).
    sink_reshapes: reshapes moved after the elementwise ops that follow them (:mod:`sam3spec.pipelines.sink_reshape`),
        so a linear's GELU and residual add fuse into its kernel; exact.
    records: a MetaSchedule database directory (:mod:`sam3spec.pipelines.records`), applied before the rules.
    stop_before_schedule: the passes up to the schedule step only (``tune`` extracts its tasks there).
    schedule_only: the schedule step alone (``tune`` measures the rules' schedule of a task)."""
    if simdgroup_f32_accumulate not in (None, "metal", "proxy"):
        raise ValueError(f"simdgroup_f32_accumulate {simdgroup_f32_accumulate!r}: metal or proxy")
    if mixed_precision not in (None, "float16"):
        raise ValueError(f"mixed_precision {mixed_precision!r}: TVM's ToMixedPrecision makes float16 only")
    if fused_attention and (mixed_precision != "float16" or target.kind.name != "cuda"):
        raise ValueError("fused_attention runs on CUDA tensor cores in float16: it needs a cuda target and "
                         "mixed_precision: float16")
    intrinsics.quick_frames()  # dlight's tensorized rules register TVM's intrinsics when they first run
    rules_target = tvm.target.Target(schedule_as) if schedule_as else target
    legalize = [p for p in gpu_generic.legalize_passes(target) if p.info.name != "ApplyDefaultSchedule"]
    passes = (gpu_attention.fuse() if fused_attention else []) \
        + ([drop_empty_concat_operands()] if drop_empty_concat else []) \
        + ([] if float64 and not mixed_precision else [float64_as_float32()]) \
        + ([clip_as_min_max(), relax.transform.ToMixedPrecision(out_dtype="float32")] if mixed_precision else []) \
        + (sink_reshape.sink() if sink_reshapes else []) \
        + (prepack.lift() if lift_weight_transforms else []) \
        + [*gpu_generic.library_dispatch_passes(target), *legalize]
    if stop_before_schedule:
        return _sequential(passes, target)
    rules = schedule(rules_target, skip_failing_rules=skip_failing_rules, static_thread_memory=static_thread_memory,
                     last_resort=last_resort, metal_simdgroup_matmul=metal_simdgroup_matmul,
                     simdgroup_f32_accumulate=simdgroup_f32_accumulate,
                     tensor_core_min_extent=tensor_core_min_extent,
                     long_reduction_matmul=long_reduction_matmul, low_batch_gemv=low_batch_gemv, stats=stats)
    if schedule_only:
        return _sequential([rules], target)
    passes += [*records_step.apply(records, stats), rules,
               *dataflow_lower_passes(gpu_generic, target, dynamic_shapes), record_threads(target, stats),
               *gpu_generic.finalize_passes(target)]
    return _sequential(passes, target)


def _sequential(passes: list, target: tvm.target.Target) -> tvm.transform.Pass:
    @tvm.transform.module_pass(opt_level=0, name="sam3spec.gpu_dlight")
    def _pipeline(mod: tvm.IRModule, _ctx) -> tvm.IRModule:
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
