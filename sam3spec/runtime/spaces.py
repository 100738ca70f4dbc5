"""MetaSchedule design spaces that a manifest's `tuning.space` names beyond MetaSchedule's own ("default": its
rules for the target kind; "cuda-tensorcore": its tensor-core set)."""

from __future__ import annotations


def cuda_wmma_dynamic():
    """MetaSchedule's cuda-tensorcore rules, its wmma float16 x float16 -> float32 groups staged in dynamic shared
    memory: staged in static shared memory (its default), no candidate of SAM3's fc1 matmul built here
    (tvm_access_ptr element type float16 vs float32 in LowerIntrin); in dynamic shared memory half of them do."""
    from tvm.s_tir import meta_schedule as ms

    from sam3spec.pipelines import intrinsics

    get_wmma_intrin_group = intrinsics.register().cuda.get_wmma_intrin_group  # the wmma intrinsics it tiles with

    groups = [get_wmma_intrin_group(load_scope="shared.dyn", store_scope="shared.dyn", in_dtype="float16",
                                    out_dtype="float32", trans_b=trans_b) for trans_b in (False, True)]
    inline = {"inline_const_tensor": True, "disallow_if_then_else": False, "require_injective": False,
              "require_ordered": False}
    rules = [
        ms.schedule_rule.ApplyCustomRule(),
        ms.schedule_rule.AutoInline(into_producer=False, into_consumer=True, **inline),
        ms.schedule_rule.MultiLevelTilingTensorCore(
            intrin_groups=groups, structure="SSSRRSRS", tile_binds=["blockIdx.y", "blockIdx.x", "threadIdx.y"],
            max_innermost_factor=4, vector_load_lens=[1, 2, 3, 4, 8, 16],
            reuse_read=ms.schedule_rule.ReuseType(req="must", levels=[4], scope="shared.dyn"),
            reuse_write=ms.schedule_rule.ReuseType(req="must", levels=[2], scope="shared.dyn"),
            use_software_pipeline=False),
        ms.schedule_rule.AutoInline(into_producer=True, into_consumer=True, **inline),
        ms.schedule_rule.CrossThreadReduction(thread_extents=[4, 8, 16, 32, 64, 128, 256, 512]),
        ms.schedule_rule.ParallelizeVectorizeUnroll(max_jobs_per_core=-1, max_vectorize_extent=-1,
                                                    unroll_max_steps=[0, 16, 64, 512, 1024], unroll_explicit=True),
        ms.schedule_rule.AutoBind(),
    ]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="cuda-tensorcore",
                                             mutator_probs="cuda-tensorcore")


def cpu_compact():
    """MetaSchedule's default LLVM rules with innermost tiles of at most 16 and explicit unrolling of at most 64
    steps: with its defaults (64, 512) one candidate of SAM's transposed convolution took over 3 minutes in LLVM
    on a 2-core machine, so a round of 16 candidates never finished."""
    from tvm.s_tir import meta_schedule as ms

    rules = [
        ms.schedule_rule.ApplyCustomRule(),
        ms.schedule_rule.InlineConstantScalars(),
        ms.schedule_rule.AutoInline(into_producer=False, into_consumer=True, inline_const_tensor=True,
                                    disallow_if_then_else=True, require_injective=True, require_ordered=True,
                                    disallow_op=["tirx.exp"]),
        ms.schedule_rule.AddRFactor(max_jobs_per_core=16, max_innermost_factor=16),
        ms.schedule_rule.MultiLevelTiling(structure="SSRSRS", max_innermost_factor=16,
                                          reuse_write=ms.schedule_rule.ReuseType(req="may", levels=[1, 2],
                                                                                 scope="global")),
        ms.schedule_rule.ParallelizeVectorizeUnroll(max_jobs_per_core=16, max_vectorize_extent=64,
                                                    unroll_max_steps=[0, 16, 64], unroll_explicit=True),
        ms.schedule_rule.RandomComputeLocation(),
    ]
    return ms.space_generator.PostOrderApply(sch_rules=rules, postprocs="llvm", mutator_probs="llvm")


SPACES = {"cuda-wmma-dynamic": cuda_wmma_dynamic, "cpu-compact": cpu_compact}
