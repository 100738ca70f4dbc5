"""The CPU pipeline and its schedule library, in the shape of TVM's dlight: one rule per file.

The stock TVM Relax CPU build (apache-tvm 0.27) leaves every TIR loop nest unscheduled: serial and scalar, about
100x slower than PyTorch (a 1024x1024x4736 linear ran at ~1.3 GFLOP/s against 100-300 for PyTorch on 2 cores), and
dlight's CPU rules have no matmul rule. These rules are a small deterministic hand schedule that aims at robust,
not optimal, and never fails a build; MetaSchedule's tuned records (``python -m sam3spec tune``,
:mod:`sam3spec.pipelines.records`) take precedence where they were measured faster.

Files, from the pipeline down:

* :mod:`.pipeline` - ``pipeline(target, ...)``, the target's ``pipeline`` entry: attention fusion
  (:mod:`sam3spec.pipelines.attention`), weight packing (:mod:`sam3spec.pipelines.prepack`), fast math, library
  dispatch, legalize with :mod:`.legalize`'s overrides + FuseOps/FuseTIR, dataflow lowering, the tuning records,
  :mod:`.schedule`'s pass, finalize.
* :mod:`.schedule` - the pass: each PrimFunc through the rules in order, each result test-lowered, a safe-mode
  retry, the unscheduled function as the last fallback.
* :mod:`.function_rules` - the rules in dlight's protocol (``apply(func, target, tunable) -> Schedule | None``),
  named in ``pipeline_options.rules`` (default ``records, attention, row_reductions, blocks``; dlight's CPU rules
  as ``dlight.<Name>``).
* Rules: :mod:`.row_reduction` (softmax, layer_norm: dlight's CPU Reduction), and block by block
  :mod:`.inline`, :mod:`.contraction` (matmul, convolutions, pooling: register tiles), :mod:`.reduction`,
  :mod:`.spatial` (elementwise, transposes).
* :mod:`.analysis` - the loop and index analysis they share; :mod:`.config` - :class:`TileConfig`.

A target without ``mcpu`` (``{"kind": "llvm"}``) is generic x86-64 (SSE2, no FMA): ~3x slower matmuls; the
manifests name ``host`` (resolved by runtime.compile.tvm_target to the compiling CPU). Every rule runs on a copy
of the schedule: an error leaves that block as it was (``stats["errors"]``). Symbolic extents are split by
constant factors with tail predicates and never fused behind another loop (:func:`.analysis.parallel_outer`).
"""

from sam3spec.pipelines.cpu.config import TileConfig
from sam3spec.pipelines.cpu.contraction import rule_contraction
from sam3spec.pipelines.cpu.inline import rule_inline
from sam3spec.pipelines.cpu.legalize import conv_transpose_legalize_map
from sam3spec.pipelines.cpu.pipeline import pipeline
from sam3spec.pipelines.cpu.reduction import rule_reduction
from sam3spec.pipelines.cpu.row_reduction import rule_row_reductions
from sam3spec.pipelines.cpu.schedule import lowers, schedule_pass, schedule_prim_func
from sam3spec.pipelines.cpu.spatial import rule_spatial

__all__ = ["pipeline", "schedule_pass", "schedule_prim_func", "conv_transpose_legalize_map", "lowers", "TileConfig",
           "rule_row_reductions", "rule_inline", "rule_contraction", "rule_reduction", "rule_spatial"]
