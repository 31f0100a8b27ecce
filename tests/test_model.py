"""The U-Net family and member checkpoints."""

import json

import pytest
import torch

from copick_soup.errors import SoupError
from copick_soup.model import create_model, list_models
from copick_soup.model.checkpoint import copy_member, load_member, save_member
from copick_soup.model.manifest import MemberManifest
from copick_soup.objects import ParticleClass


@pytest.mark.parametrize("name", list_models())
def test_every_variant_maps_a_volume_to_one_heatmap_per_class(name):
    model = create_model(name, n_classes=3).eval()
    side = max(2 * model.divisor, 16)  # instance norm needs more than one voxel at the deepest level
    with torch.inference_mode():
        out = model(torch.randn(2, 1, side, side, side))
    assert out.shape == (2, 3, side, side, side)


@pytest.mark.parametrize("name, low, high, levels", [
    ("unet3d_tiny", 1e6, 2e6, 3), ("unet3d_medium", 4e6, 5e6, 4), ("unet3d_large", 10e6, 12e6, 5)])
def test_variant_sizes(name, low, high, levels):
    model = create_model(name, n_classes=6)
    assert low <= sum(p.numel() for p in model.parameters()) <= high
    assert len(model.config.channels) == levels


def test_unknown_variant_lists_the_known_ones():
    with pytest.raises(SoupError, match="unknown model 'unet3d_huge'; known models: .*unet3d_tiny"):
        create_model("unet3d_huge")


def test_bf16_autocast_on_cpu():
    model = create_model("unet3d_test", n_classes=2)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(1, 1, 16, 16, 16))
    assert out.shape == (1, 2, 16, 16, 16) and torch.isfinite(out.float()).all()


def test_auto_precision_is_bf16_only_where_the_cpu_has_it_and_stays_close_to_float32():
    from copick_soup.device import amp_dtype, cpu_has_bf16, cpu_has_fp16
    from copick_soup.ensemble.runtimes import TorchPredictor

    assert amp_dtype("auto", "cpu") == (torch.bfloat16 if cpu_has_bf16() else None)
    assert amp_dtype("none", "cpu") is None and amp_dtype("bf16", "cpu") == torch.bfloat16
    if cpu_has_fp16():
        assert amp_dtype("fp16", "cpu") == torch.float16
    else:  # a reference-kernel crawl (100 s a window here) is refused, not run
        with pytest.raises(SoupError, match="^amp fp16: this CPU has no native float16 convolutions"):
            amp_dtype("fp16", "cpu")
    with pytest.raises(SoupError, match="amp: choose one of auto, none, bf16, fp16, got 'fp8'"):
        amp_dtype("fp8")
    torch.manual_seed(0)
    model = create_model("unet3d_test", n_classes=2).eval()
    batch = torch.randn(2, 1, 16, 16, 16).numpy()
    exact = TorchPredictor(model, "cpu", None)(batch)
    auto = TorchPredictor(model, "cpu", amp_dtype("auto", "cpu"))(batch)
    assert auto.dtype == exact.dtype and abs(auto - exact).max() < 0.05 * abs(exact).max()


def manifest():
    return MemberManifest(name="m", variant="unet3d_test", unet={}, classes=[ParticleClass("a", 1, 60.0)],
                          voxel_size=10.012, tomo_type="denoised")


def test_member_round_trip_is_bit_exact(tmp_path):
    model = create_model("unet3d_test", n_classes=1)
    path = save_member(tmp_path / "m", model, manifest())
    loaded, meta = load_member(path)
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        assert torch.equal(model.eval()(x), loaded(x))
    assert meta.tomo_type == "denoised" and meta.unet["channels"] == [4, 8]
    assert json.loads(path.read_text())["architecture"]["config"]["channels"] == [4, 8]  # the file format


def test_a_float16_copy_is_half_the_size_and_predicts_the_same(tmp_path):
    torch.manual_seed(0)
    model = create_model("unet3d_test", n_classes=1)
    path = save_member(tmp_path / "full" / "m", model, manifest())
    half = copy_member(path, tmp_path / "half", float16=True)
    size = {p: p.with_suffix(".safetensors").stat().st_size for p in (path, half)}
    assert size[half] < 0.6 * size[path]
    loaded, meta = load_member(half)  # the manifest's SHA-256 is the half file's
    assert meta.weights == "m.safetensors" and next(loaded.parameters()).dtype == torch.float32
    x = torch.randn(1, 1, 16, 16, 16)
    with torch.inference_mode():
        full, halved = model.eval()(x), loaded(x)
    assert not torch.equal(full, halved) and abs(full - halved).max() < 1e-2 * abs(full).max()


def test_corrupt_weights_are_refused(tmp_path):
    path = save_member(tmp_path / "m", create_model("unet3d_test", n_classes=1), manifest())
    weights = path.with_suffix(".safetensors")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(SoupError, match="m.safetensors: corrupt checkpoint"):
        load_member(path)


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = save_member(tmp_path / "m", create_model("unet3d_test", n_classes=1), manifest())
    meta = json.loads(path.read_text())
    meta["architecture"] = dict(name="unet3d_tiny", config=dict(channels=[16, 48, 160], in_channels=1, n_classes=1))
    path.write_text(json.dumps(meta))
    with pytest.raises(SoupError, match="weights do not fit architecture unet3d_tiny"):
        load_member(path)


def test_a_file_that_is_not_a_member(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(SoupError, match="x.json: not a copick-soup member"):
        load_member(tmp_path / "x.json")


@pytest.mark.parametrize("norm", ["batch", "fixed", "instance"])
def test_batch_norm_heatmaps_do_not_depend_on_the_window_and_instance_norm_ones_do(norm):
    """The same voxels, 12 or more from either window's border (beyond unet3d_test's reach), in a 64³ window and in
    a 48³ one inside it: equal under batch or fixed norms (statistics set in training), not under instance norms."""
    from helpers import batch_norm_unet

    torch.manual_seed(0)
    model = batch_norm_unet(0, norm=norm) if norm != "instance" else create_model("unet3d_test", n_classes=2).eval()
    x = torch.randn(1, 1, 64, 64, 64)
    with torch.inference_mode():
        whole = model(x)[..., 20:44, 20:44, 20:44]
        inside = model(x[..., 8:56, 8:56, 8:56])[..., 12:36, 12:36, 12:36]
    same = torch.allclose(whole, inside, atol=1e-5)
    assert same if norm != "instance" else not same and (whole - inside).abs().max() > 1e-3


def test_a_norm_it_does_not_know_is_refused_and_a_member_names_its_file(tmp_path):
    with pytest.raises(SoupError, match="^norm: choose one of instance, batch, fixed, got 'group'$"):
        create_model("unet3d_test", norm="group")
    model = create_model("unet3d_test", n_classes=1, norm="batch")
    path = save_member(tmp_path / "m", model, manifest())
    loaded, _ = load_member(path)
    assert loaded.config.norm == "batch" and any(isinstance(m, torch.nn.BatchNorm3d) for m in loaded.modules())
    meta = json.loads(path.read_text())
    meta["architecture"]["config"]["norm"] = "group"
    path.write_text(json.dumps(meta))
    with pytest.raises(SoupError, match=f"^{path}: norm: choose one of instance, batch, fixed, got 'group'$"):
        load_member(path)
