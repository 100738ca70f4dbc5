"""The CPU Relax pipeline: input-free values folded, attention fusion, weight packing, fast math, library
dispatch, legalize + FuseOps/FuseTIR, dataflow lowering, tuning records, the schedule pass, finalize."""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.ir import IRModule
from tvm.relax.backend.cpu_generic import pipeline as cpu_generic_pipeline

from sam3spec.pipelines import (
    absorb_projection, attention, dataflow_lower_passes, host_noalias, input_free, prepack, records as records_step,
)
from sam3spec.pipelines.cpu import function_rules, winograd
from sam3spec.pipelines.cpu.config import TileConfig
from sam3spec.pipelines.cpu.legalize import (
    conv_transpose_legalize_map, gelu_fast_erf_legalize_map, patch_conv_legalize_map,
)
from sam3spec.pipelines.cpu.schedule import schedule_pass


def pipeline(
    target: tvm.target.Target,
    dynamic_shapes: bool = False,
    stats: dict | None = None,
    schedule: bool = True,
    verify: bool = True,
    conv_transpose_as_matmul: bool = True,
    patch_conv_as_matmul: bool = True,
    prepack_weights: bool = True,
    fast_math: bool = True,
    fuse_attention: bool = True,
    fold_input_free: bool = True,
    winograd_conv: bool = False,
    absorb_projections: bool = False,
    records: str | None = None,
    rules: list[str] | tuple[str, ...] = function_rules.DEFAULT,
    stop_before_schedule: bool = False,
    schedule_only: bool = False,
) -> tvm.transform.Pass:
    """Default Relax CPU pipeline + :func:`schedule_pass`.

    Parameters
    ----------
    target : the llvm target (also pass it to ``tvm.compile``).
    dynamic_shapes : drop ``RewriteDataflowReshape`` (fails on symbolic shapes).
    stats : optional dict filled with how many blocks each rule scheduled.
    schedule : False gives the same pipeline without the scheduling pass (A/B checks).
    verify : check that each scheduled PrimFunc lowers, else fall back (see schedule_pass).
    conv_transpose_as_matmul : legalize stride == kernel transposed convs without
        the zero-dilated input (:func:`conv_transpose_legalize_map`); exact.
    patch_conv_as_matmul : stride == kernel convs as patches x weight rows
        (:func:`patch_conv_legalize_map`); exact up to summation order.
    prepack_weights : weight matmuls read ``col_tile``-wide panels made once by
        ``main_transform_params`` (:mod:`sam3spec.pipelines.prepack`); exact.
    fast_math : ``exp`` (softmax) and ``erf`` (GELU) as vectorisable polynomials
        (``FastMathTransform``, :func:`gelu_fast_erf_legalize_map`) instead of scalar
        libm calls per element; relative error ~1e-6.
    fuse_attention : softmax(q k^T) v as one kernel per block of query rows
        (:mod:`sam3spec.pipelines.attention`).
    fold_input_free : values that depend on no input and no weight (a positional encoding of a fixed grid)
        computed at compile time (:mod:`sam3spec.pipelines.input_free`).
    winograd_conv : 3x3 convolutions (stride 1, padding 1, >= 64 channels) as Winograd F(2x2, 3x3)
        (:mod:`sam3spec.pipelines.cpu.winograd`): 2.25x fewer multiply-adds; max abs error 7e-6 at 256 channels.
    absorb_projections : attention of a few queries over many keys reads the keys' source instead of projecting
        it (:mod:`sam3spec.pipelines.absorb_projection`); equal up to summation order.
    records : a MetaSchedule database directory (:mod:`sam3spec.pipelines.records`), applied before the rules.
    rules : the schedule rules in order, by name (:mod:`sam3spec.pipelines.cpu.function_rules`): ``records``
        (first, or absent: records not applied), ``attention``, ``winograd``, ``row_reductions``, ``blocks``,
        and dlight's CPU rules as ``dlight.<Name>``.
    stop_before_schedule : the passes up to the schedule step only (``tune`` extracts its tasks there).
    schedule_only : the schedule step alone (``tune`` measures the rules' schedule of a task).
    """
    function_rules.check(rules)
    if isinstance(target, (str, dict)):
        target = tvm.target.Target(target)
    rp = relax.pipeline

    @tvm.transform.module_pass(opt_level=0, name="CPUBasicPipeline")
    def _pipeline(mod: IRModule, _ctx) -> IRModule:
        # relax.pipeline.dataflow_lower_passes raises AttributeError for llvm in apache-tvm 0.27.0.post1
        # (relax.backend.cpu_generic does not re-export it): take them from the module that defines them.
        dataflow_lower = dataflow_lower_passes(cpu_generic_pipeline, target, dynamic_shapes)
        legalize = list(rp.legalize_passes(target))
        custom = {}
        if conv_transpose_as_matmul:
            custom.update(conv_transpose_legalize_map())
        if patch_conv_as_matmul:
            custom.update(patch_conv_legalize_map())
        if fast_math:
            custom.update(gelu_fast_erf_legalize_map())
        if custom:
            legalize = [
                relax.transform.LegalizeOps(customize_legalize_map=custom)
                if p.info.name == "LegalizeOps"
                else p
                for p in legalize
            ]
        packing = [prepack.pack_weights(TileConfig.for_target(target).col_tile, stats), *prepack.lift()]
        passes = (
            ([input_free.fold()] if fold_input_free else [])
            + (absorb_projection.absorb() if absorb_projections else [])
            + (attention.fuse() if fuse_attention else [])
            + (winograd.rewrite() if winograd_conv else [])
            + (packing if prepack_weights else [])
            + ([relax.transform.FastMathTransform()] if fast_math else [])
            + list(rp.library_dispatch_passes(target))
            + legalize
        )
        if not stop_before_schedule:  # tuning's tasks: MetaSchedule finds them in call_tir, before dataflow lowering
            passes += dataflow_lower + records_step.apply(records if function_rules.RECORDS in rules else None, stats)
            passes += [schedule_pass(target, stats, verify, rules)] if schedule else []
            passes += list(rp.finalize_passes(target)) + [host_noalias.mark]
        if schedule_only:
            passes = [schedule_pass(target, stats, verify, rules)]
        with target:
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline
