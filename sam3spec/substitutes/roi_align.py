"""torchvision.ops.roi_align is a C++/CUDA op, unavailable with CPU torch here and opaque to torch.export: pure torch.

Follows torchvision's CPU kernel (roi_align_kernel.cpp, roi_align_common.h) exactly, as a separable sum:
every sample's bilinear weight is a product of a row weight and a column weight (and so is its validity
test), so each bin's sum of samples is `row_weights[p] @ feature @ column_weights[q]`, where the row/column
weights sum the 1-D bilinear weights of all samples of the bin. No data-dependent Python control flow.

With sampling_ratio <= 0 torchvision takes ceil(roi_size / pooled_size) samples per bin along each axis, a
number that depends on the box; here the sample positions are laid out up to a fixed MAX_SAMPLES_PER_BIN and
those past a box's own count are masked out. A box that needs more samples than that gets
MAX_SAMPLES_PER_BIN evenly spaced ones instead (exactly torchvision's result with sampling_ratio=MAX_SAMPLES_PER_BIN).
"""
import torch

# Exact for boxes up to MAX_SAMPLES_PER_BIN * output_size feature pixels per side (64 * 7 = 448 for SAM3's
# 7x7 pools on a 72x72 map, i.e. over 6 times the map). Cost grows linearly with it: [K, pooled, 64, H] weights.
MAX_SAMPLES_PER_BIN = 64


def _axis_weights(start, end, pooled, size, sampling_ratio, aligned):
    """Summed bilinear weights [K, pooled, size] of one axis' samples per bin, and the samples per bin [K]."""
    length = end - start
    if not aligned:  # torchvision forces malformed boxes to be 1x1
        length = length.clamp(min=1.0)
    bin_size = (length / pooled)[:, None, None]
    if sampling_ratio > 0:
        grid, n = torch.full_like(length, sampling_ratio), sampling_ratio
    else:
        grid, n = torch.ceil(length / pooled).clamp(max=MAX_SAMPLES_PER_BIN), MAX_SAMPLES_PER_BIN
    p = torch.arange(pooled, dtype=length.dtype, device=length.device)[:, None]
    i = torch.arange(n, dtype=length.dtype, device=length.device)
    # sample coordinates [K, pooled, n], in the kernel's order of operations
    pos = start[:, None, None] + p * bin_size + (i + 0.5) * bin_size / grid.clamp(min=1)[:, None, None]
    valid = (i < grid[:, None, None]) & (pos >= -1) & (pos <= size)
    # within the map the kernel's (hy, ly) on (low, low + 1) is the tent 1 - |pos - h|; outside [0, size - 1]
    # it clamps the sample onto the border row
    h = torch.arange(size, dtype=length.dtype, device=length.device)
    tent = (1 - (pos.clamp(0, size - 1)[..., None] - h).abs()).clamp(min=0)
    return (tent * valid[..., None]).sum(2), grid.clamp(min=0)  # tent is finite: * 0/1 selects exactly


def roi_align(input, boxes, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align: input [N, C, H, W]; boxes Tensor[K, 5] (batch index, x1, y1, x2, y2) or a
    list/tuple of Tensor[Ki, 4], one per image. Returns [K, C, pooled_h, pooled_w]."""
    if not isinstance(boxes, torch.Tensor):
        boxes = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], 1) for i, b in enumerate(boxes)])
    pooled_h, pooled_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    n, _, height, width = input.shape
    dtype = torch.float64 if input.dtype == torch.float64 else torch.float32  # at least float32
    rois = boxes.to(dtype)
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - (0.5 if aligned else 0.0)).unbind(1)
    row, grid_h = _axis_weights(y1, y2, pooled_h, height, sampling_ratio, aligned)
    col, grid_w = _axis_weights(x1, x2, pooled_w, width, sampling_ratio, aligned)
    # select each box's image by a one-hot over the batch, instead of gathering a [K, C, H, W] copy
    image = (rois[:, :1].long() == torch.arange(n, device=rois.device)).to(dtype)
    rows = torch.einsum("kpbh,bchw->kpcw", row[:, :, None, :] * image[:, None, :, None], input.to(dtype))
    out = torch.einsum("kpcw,kqw->kcpq", rows, col) / (grid_h * grid_w).clamp(min=1)[:, None, None, None]
    return out.to(input.dtype)


class RoIAlign(torch.nn.Module):
    """torchvision.ops.RoIAlign."""

    def __init__(self, output_size, spatial_scale, sampling_ratio, aligned=False):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, spatial_scale
        self.sampling_ratio, self.aligned = sampling_ratio, aligned

    def forward(self, input, rois):
        return roi_align(input, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)
