"""Instance norms with local statistics (benchmarks/local_norm.py): what a cube tiling's window would have given.
Not part of the package (benchmarks/results/norms.md), but benchmarks/norms.py's table rests on them being right."""

import sys
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from copick_soup.model import create_model

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
from local_norm import LocalInstanceNorm3d, box_starts, localise  # noqa: E402


def affine_norm(channels: int) -> nn.InstanceNorm3d:
    norm = nn.InstanceNorm3d(channels, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
    return norm


def test_box_starts_cover_the_axis_every_quarter_side():
    assert box_starts(40, 16) == [0, 4, 8, 12, 16, 20, 24]
    assert box_starts(42, 16) == [0, 4, 8, 12, 16, 20, 24, 26]  # the last box ends at the axis' end
    assert box_starts(10, 16) == [0]  # shorter than a box: the whole axis


def test_in_a_window_no_larger_than_the_side_it_is_the_instance_norm():
    torch.manual_seed(0)
    norm = affine_norm(3)
    x = torch.randn(2, 3, 16, 12, 16) * 3 + 1
    assert torch.allclose(LocalInstanceNorm3d(norm, 16)(x), norm(x), atol=1e-5)


def test_a_voxel_at_a_box_centre_is_normalised_by_that_box_alone():
    torch.manual_seed(1)
    norm = affine_norm(2)
    x = torch.randn(1, 2, 15, 45, 21) * 2 + torch.linspace(-3, 3, 45).view(1, 1, 1, 45, 1)  # a trend along y
    out = LocalInstanceNorm3d(norm, 15)(x)  # odd side: box centres fall on voxels; boxes every 3 voxels
    for y0, x0 in [(3, 6), (15, 0), (30, 6)]:  # box starts along y (0, 3, ... 30) and x (0, 3, 6)
        box = x[:, :, :, y0:y0 + 15, x0:x0 + 15]
        expected = F.instance_norm(box, weight=norm.weight, bias=norm.bias, eps=norm.eps)[:, :, 7, 7, 7]
        assert torch.allclose(out[:, :, 7, y0 + 7, x0 + 7], expected, atol=1e-4)
    whole = norm(x)[:, :, 7, 3 + 7, 6 + 7]
    assert not torch.allclose(out[:, :, 7, 3 + 7, 6 + 7], whole, atol=1e-2)  # the window's statistics differ


def test_localise_swaps_every_norm_with_the_side_halving_per_level():
    model = create_model("unet3d_test", n_classes=2).eval()  # 2 levels
    local = localise(model, 16)
    sides = [m.side for m in local.modules() if isinstance(m, LocalInstanceNorm3d)]
    assert sides == [16, 16, 8, 8, 16, 16]  # encoder level 0, level 1, decoder level 0
    assert not any(isinstance(m, nn.InstanceNorm3d) for m in local.modules())
    with torch.inference_mode():
        small = torch.randn(1, 1, 16, 16, 16)
        assert torch.allclose(local(small), model(small), atol=1e-5)  # windows of the side: unchanged
        large = torch.randn(1, 1, 16, 48, 16)
        assert not torch.allclose(local(large), model(large), atol=1e-3)
