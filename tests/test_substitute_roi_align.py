import math

import numpy as np
import pytest
import torch

from sam3spec.substitutes.roi_align import MAX_SAMPLES_PER_BIN, RoIAlign, roi_align


def bilinear_interpolate(image, height, width, y, x):
    """torchvision roi_align_common.h: pre_calc_for_bilinear_interpolate for one sample, all channels."""
    if y < -1.0 or y > height or x < -1.0 or x > width:
        return np.zeros(image.shape[0])
    y, x = max(y, 0.0), max(x, 0.0)
    y_low, x_low = int(y), int(x)
    if y_low >= height - 1:
        y_high = y_low = height - 1
        y = float(y_low)
    else:
        y_high = y_low + 1
    if x_low >= width - 1:
        x_high = x_low = width - 1
        x = float(x_low)
    else:
        x_high = x_low + 1
    ly, lx = y - y_low, x - x_low
    hy, hx = 1.0 - ly, 1.0 - lx
    return (hy * hx * image[:, y_low, x_low] + hy * lx * image[:, y_low, x_high]
            + ly * hx * image[:, y_high, x_low] + ly * lx * image[:, y_high, x_high])


def reference_roi_align(input, rois, pooled_h, pooled_w, spatial_scale, sampling_ratio, aligned):
    """torchvision roi_align_kernel.cpp: roi_align_forward_kernel_impl, in float64."""
    input, rois = input.double().numpy(), rois.double().numpy()
    _, channels, height, width = input.shape
    output = np.zeros((len(rois), channels, pooled_h, pooled_w))
    for n, roi in enumerate(rois):
        offset = 0.5 if aligned else 0.0
        start_w, start_h = roi[1] * spatial_scale - offset, roi[2] * spatial_scale - offset
        end_w, end_h = roi[3] * spatial_scale - offset, roi[4] * spatial_scale - offset
        roi_width, roi_height = end_w - start_w, end_h - start_h
        if not aligned:
            roi_width, roi_height = max(roi_width, 1.0), max(roi_height, 1.0)
        bin_h, bin_w = roi_height / pooled_h, roi_width / pooled_w
        grid_h = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_height / pooled_h))
        grid_w = sampling_ratio if sampling_ratio > 0 else int(math.ceil(roi_width / pooled_w))
        count = max(grid_h * grid_w, 1)
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                total = np.zeros(channels)
                for iy in range(grid_h):
                    y = start_h + ph * bin_h + (iy + 0.5) * bin_h / grid_h
                    for ix in range(grid_w):
                        x = start_w + pw * bin_w + (ix + 0.5) * bin_w / grid_w
                        total += bilinear_interpolate(input[int(roi[0])], height, width, y, x)
                output[n, :, ph, pw] = total / count
    return torch.from_numpy(output)


def make_rois(generator):
    """[K, 5] rois over 3 images of a 7x9 map: inside, partly outside, fully outside, tiny, degenerate, large."""
    boxes = [
        [0, 1.0, 1.0, 6.0, 5.0],
        [1, -3.0, -2.5, 4.2, 3.3],  # partly outside, top-left
        [2, 5.5, 3.7, 13.0, 10.0],  # partly outside, bottom-right
        [0, -20.0, -20.0, -5.0, -4.0],  # entirely outside
        [1, 2.3, 3.1, 2.4, 3.15],  # tiny
        [2, 4.0, 2.0, 4.0, 2.0],  # zero size
        [0, 6.0, 5.0, 3.0, 1.0],  # x2 < x1, y2 < y1
        [1, -8.0, -6.0, 25.0, 19.0],  # larger than the map: several samples per bin
        [2, 8.2, 6.1, 9.7, 7.4],  # straddles the last row/column
    ]
    random = torch.rand(6, 4, generator=generator, dtype=torch.float64) * torch.tensor([12, 10, 12, 10]) - 2
    random = torch.cat([torch.tensor([[0], [1], [2], [2], [1], [0]], dtype=torch.float64), random], 1)
    return torch.cat([torch.tensor(boxes, dtype=torch.float64), random])


@pytest.mark.parametrize("aligned", [False, True])
@pytest.mark.parametrize("sampling_ratio", [2, -1])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5])
def test_matches_torchvision_kernel(aligned, sampling_ratio, spatial_scale):
    generator = torch.Generator().manual_seed(0)
    input = torch.randn(3, 4, 7, 9, generator=generator, dtype=torch.float64)
    rois = make_rois(generator)
    rois[:, 1:] /= spatial_scale
    expected = reference_roi_align(input, rois, 3, 4, spatial_scale, sampling_ratio, aligned)

    got = roi_align(input, rois, (3, 4), spatial_scale, sampling_ratio, aligned)
    assert got.dtype == torch.float64 and got.shape == (len(rois), 4, 3, 4)
    assert (got - expected).abs().max() < 1e-10
    assert expected.abs().max() > 0.5  # the comparison is not vacuous

    got32 = RoIAlign((3, 4), spatial_scale, sampling_ratio, aligned)(input.float(), rois.float())
    assert got32.dtype == torch.float32
    assert (got32.double() - expected).abs().max() < 1e-5


def test_list_of_boxes_as_sam3_geometry_encoder_calls_it():
    """geometry_encoders.py: roi_align(img_feats, boxes_xyxy.float().transpose(0, 1).unbind(0), 7)."""
    generator = torch.Generator().manual_seed(1)
    img_feats = torch.randn(2, 5, 12, 12, generator=generator)
    boxes_xyxy = torch.rand(3, 2, 4, generator=generator) * 12  # [n_boxes, bs, 4]
    boxes_xyxy[..., 2:] += boxes_xyxy[..., :2]
    per_image = boxes_xyxy.float().transpose(0, 1).unbind(0)

    got = roi_align(img_feats, per_image, 7)
    assert got.shape == (6, 5, 7, 7)
    rois = torch.cat([torch.cat([torch.full((3, 1), float(i)), b], 1) for i, b in enumerate(per_image)])
    expected = reference_roi_align(img_feats, rois, 7, 7, 1.0, -1, False)
    assert (got.double() - expected).abs().max() < 1e-5
    assert torch.equal(got, roi_align(img_feats, rois, 7))


def test_box_beyond_sample_bound_uses_bound_samples():
    """ceil(roi / pooled) > MAX_SAMPLES_PER_BIN: equals torchvision with sampling_ratio=MAX_SAMPLES_PER_BIN."""
    input = torch.randn(1, 2, 5, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    side = 2 * MAX_SAMPLES_PER_BIN + 7.0
    rois = torch.tensor([[0, -side / 2, -side / 3, side / 2, 2 * side / 3]], dtype=torch.float64)
    expected = reference_roi_align(input, rois, 2, 2, 1.0, MAX_SAMPLES_PER_BIN, False)
    assert (roi_align(input, rois, 2) - expected).abs().max() < 1e-10


class Pool(torch.nn.Module):
    def forward(self, features, boxes):
        return roi_align(features, boxes, 7, spatial_scale=0.5, sampling_ratio=-1, aligned=False)


def test_export_with_dynamic_box_count():
    generator = torch.Generator().manual_seed(3)
    features = torch.randn(2, 3, 10, 11, generator=generator)

    def boxes(k):
        xy = torch.rand(k, 2, generator=generator) * 20 - 2
        wh = torch.rand(k, 2, generator=generator) * 16
        return torch.cat([torch.randint(0, 2, (k, 1), generator=generator).float(), xy, xy + wh], 1)

    example = boxes(3)
    program = torch.export.export(Pool(), (features, example), dynamic_shapes=({}, {0: torch.export.Dim("k")}),
                                  strict=False)
    for k in (3, 5):
        b = example if k == 3 else boxes(k)
        got = program.module()(features, b)
        assert got.shape == (k, 3, 7, 7)
        assert torch.allclose(got, Pool()(features, b), atol=1e-6, rtol=0)
        expected = reference_roi_align(features, b, 7, 7, 0.5, -1, False)
        assert (got.double() - expected).abs().max() < 1e-5
