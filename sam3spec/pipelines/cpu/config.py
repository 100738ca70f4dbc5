"""Tile sizes of the CPU rules (:class:`TileConfig`), picked from the target's vector width."""

from __future__ import annotations

import tvm


# Below this many (constant) iterations a loop nest is not worth a thread launch.
MIN_PARALLEL_EXTENT = 2048


class TileConfig:
    """Register tile of :func:`rule_contraction` and vector width of the other rules.

    ``col_tile`` elements along the vectorised axis (LLVM splits them into
    vector registers of ``vec_lanes``) x ``row_tile`` rows are accumulated in
    registers. Measured on a 2-core AVX-512 host, 5184x1024x4736 fp32 matmul,
    2 threads: 64x6 (24 zmm accumulators) 299 GFLOP/s, 32x6 197, 16x8 ~100. With AVX2 (16 ymm
    registers; AMD EPYC Zen 3, 2 threads) 16x6 (12 ymm accumulators): a 5184x1024x4096 linear 172 GFLOP/s
    against 154 with 16x4, 158 with 24x4, 120 with 32x3; the fused attention 16 x 5184 x 5184 (head dim 64)
    140 GFLOP/s with 6x16, 120 with 4x16, 50 with AVX-512's 6x64 (its 48 ymm accumulators spill).

    ``row_block`` row tiles of a matmul over prepacked weight panels are computed panel after panel, so that
    those rows (96 x K floats with 6-row tiles) stay in cache while all the panels pass over them; without it
    every panel streamed all of the rows. AVX2 host above, 5184x1024x4096 linear, 6x16 tiles, medians of 5 in
    alternating runs: 16 row tiles 168 and 160 GFLOP/s against 138 and 133 unblocked; 5184x4096x1024 within
    the noise (177/170 against 154/168); 8 row tiles 150. Convolutions (no weight panels) are left unblocked:
    a 3x3 256-channel conv at 288x288 took 758 ms blocked against 711 unblocked.

    A tile narrower than ``col_tile`` takes more rows (:meth:`rows_for`). A 3x3 256-channel conv at 288x288 tiles
    its rows in 32s (288 is no multiple of 64): 6 x 32 (12 zmm accumulators) took 801 ms, 8 x 32 601 ms (AMD EPYC
    Zen 4, AVX-512, 2 threads; PyTorch 702 and 616 ms in the same runs); at 144x144 167 -> 146 ms, at 72x72
    (8-wide tiles) 75 -> 53 ms.
    """

    def __init__(self, vec_lanes: int = 16, row_tile: int = 4, fuse: bool = True,
                 col_tile: int | None = None):
        self.vec_lanes = vec_lanes
        self.row_tile = row_tile
        self.col_tile = col_tile or vec_lanes
        self.fuse = fuse  # False: "safe" retry mode, parallelise outermost loops without fusing
        self.row_block = 16

    def rows_for(self, cols: int) -> int:
        """Rows of a register tile `cols` wide: a tile narrower than ``col_tile`` (a 288-wide convolution row
        splits into 32s) takes more rows, up to twice ``row_tile``, to keep about as many accumulators."""
        if cols >= self.col_tile:
            return self.row_tile
        return min(self.row_tile * self.col_tile // cols, 2 * self.row_tile)

    def safe(self) -> "TileConfig":
        """The fallback configuration used when a scheduled function fails to lower."""
        return TileConfig(self.vec_lanes, self.row_tile, fuse=False, col_tile=self.col_tile)

    @staticmethod
    def for_target(target: tvm.target.Target | None) -> "TileConfig":
        """Pick tiles from the target's CPU features (AVX-512 -> 6x64, else 6x16)."""
        try:
            if target is not None and tvm.target.codegen.target_has_features("avx512f", target):
                return TileConfig(16, 6, col_tile=64)
        except Exception:  # pylint: disable=broad-except
            pass
        return TileConfig(16, 6)

    def __repr__(self) -> str:
        return (f"TileConfig(vec_lanes={self.vec_lanes}, row_tile={self.row_tile}, "
                f"col_tile={self.col_tile}, fuse={self.fuse})")


DEFAULT_CFG = TileConfig()
