"""map_volume: any batch function over a whole image, slice by slice or by sliding window."""

import torch

from attnseg.inference.volume import map_volume


def _features(batch: torch.Tensor) -> torch.Tensor:
    """Two channels per input channel: the value and its square (a map the same size as the batch)."""
    return torch.cat([batch, batch**2], dim=1)


def test_slices_along_any_axis_come_back_in_place():
    image = torch.randn(1, 7, 6, 5)
    for axis in (0, 1, 2):
        out = map_volume(_features, image, spatial_dims=2, slice_axis=axis, batch_size=3)
        torch.testing.assert_close(out, torch.cat([image, image**2]))


def test_sliding_window_blends_back_the_same_values():
    image = torch.randn(1, 19, 14, 11)
    out = map_volume(_features, image, spatial_dims=3, patch_size=(8, 8, 8), batch_size=2, overlap=0.5)
    torch.testing.assert_close(out, torch.cat([image, image**2]), atol=1e-5, rtol=1e-5)
