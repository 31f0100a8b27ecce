"""Fixed norms (train/fixed.py): an instance-norm U-Net's statistics measured once, then never moved."""

import numpy as np
import pytest
import torch

from copick_soup.errors import SoupError
from copick_soup.model import create_model
from copick_soup.train.fixed import fix_statistics, random_windows


def instance_unet(seed: int):
    """unet3d_test with instance norms whose affine is not the identity's, so that every norm matters."""
    torch.manual_seed(seed)
    net = create_model("unet3d_test", n_classes=2)
    for layer in net.modules():
        if isinstance(layer, torch.nn.InstanceNorm3d):
            layer.weight.data.uniform_(0.5, 1.5)
            layer.bias.data.uniform_(-0.3, 0.3)
    return net.eval()


def fixed_copy(instance):
    fixed = create_model("unet3d_test", n_classes=2, norm="fixed")
    fixed.load_state_dict(instance.state_dict(), strict=False)
    return fixed.eval()


def test_statistics_measured_on_one_window_reproduce_the_instance_norms_there_and_nowhere_else():
    instance = instance_unet(0)
    fixed = fixed_copy(instance)
    window = torch.randn(1, 1, 32, 32, 32) * 2 + 1
    other = torch.randn(1, 1, 32, 32, 32) * 0.5 - 1  # another level and spread: instance norms adapt, fixed do not
    fix_statistics(fixed, instance, [window])
    with torch.inference_mode():
        torch.testing.assert_close(fixed(window), instance(window), atol=1e-4, rtol=1e-4)
        assert (fixed(other) - instance(other)).abs().max() > 0.1


def test_statistics_over_several_windows_are_the_mean_of_each_windows_own():
    instance = instance_unet(1)
    fixed = fixed_copy(instance)
    windows = [torch.randn(1, 1, 16, 16, 16) * s for s in (0.5, 1.0, 3.0)]
    fix_statistics(fixed, instance, windows, passes=1)
    first = fixed.encoders[0][1]  # the first norm sees the input itself: its statistics are the windows'
    conv = instance.encoders[0][0]
    with torch.inference_mode():
        seen = [conv(w) for w in windows]
    torch.testing.assert_close(first.running_mean, torch.stack([s.mean(dim=(0, 2, 3, 4)) for s in seen]).mean(0))
    torch.testing.assert_close(first.running_var,
                               torch.stack([s.var(dim=(0, 2, 3, 4), unbiased=False) for s in seen]).mean(0))


def test_fixed_norms_normalise_alike_in_training_and_never_move():
    fixed = fixed_copy(instance_unet(2))
    fix_statistics(fixed, instance_unet(2), [torch.randn(1, 1, 16, 16, 16)])
    before = {k: v.clone() for k, v in fixed.state_dict().items() if "running" in k}
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.no_grad():
        at_inference = fixed.eval()(x)
    fixed.train()
    out = fixed(x)
    torch.testing.assert_close(out, at_inference)
    out.square().mean().backward()
    torch.optim.SGD(fixed.parameters(), lr=0.1).step()
    assert all(torch.equal(fixed.state_dict()[k], v) for k, v in before.items())


def test_random_windows_are_cubes_of_the_volumes():
    from copick_soup.train.dataset import TrainVolume

    image = np.arange(20 * 30 * 40, dtype=np.float32).reshape(20, 30, 40)
    windows = random_windows([TrainVolume("r", "denoised", image, [])], 5, 16, np.random.default_rng(0))
    assert len(windows) == 5 and all(w.shape == (1, 1, 16, 16, 16) for w in windows)
    for w in windows:  # each is a contiguous crop: its first voxel says where, the rest follows
        z, rest = divmod(int(w[0, 0, 0, 0, 0]), 30 * 40)
        y, x = divmod(rest, 40)
        np.testing.assert_array_equal(w[0, 0].numpy(), image[z:z + 16, y:y + 16, x:x + 16])


def test_fixed_norms_need_a_member_to_measure_from(tmp_path):
    from copick_soup.objects import classes_from_objects, czii_pickable_objects
    from copick_soup.train.config import TrainConfig
    from copick_soup.train.loop import train_member

    cfg = TrainConfig(variant="unet3d_test", norm="fixed", device="cpu")
    with pytest.raises(SoupError, match="^norm: fixed takes its statistics from the member it starts from: give "
                                        "--init an instance-norm member"):
        train_member(cfg, classes_from_objects(czii_pickable_objects()), [], [], tmp_path, 10.012, "denoised")
