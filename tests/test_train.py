"""Training: targets, augmentation, patches, the loop (loss falls, checkpoints round-trip, resume), recipes."""

import json

import numpy as np
import pytest
import torch

from copick_soup.data import open_project
from copick_soup.data.tomogram import normalisation_stats
from copick_soup.ensemble.tiling import Tiling
from copick_soup.errors import SoupError
from copick_soup.objects import VOXEL_SIZE, classes_from_root
from copick_soup.train.augment import Randomisation, augment, low_frequency_gain, zoom_to
from copick_soup.train.config import TrainConfig, override, parse_overrides
from copick_soup.train.dataset import PatchSampler, TrainVolume, load_volumes
from copick_soup.train.loop import train_member
from copick_soup.train.loss import weighted_mse
from copick_soup.train.negatives import false_peaks, mine_negatives
from copick_soup.train.targets import gaussian_heatmaps
from copick_soup.train.validation import validate


def test_heatmap_peaks_at_the_particle_and_follows_its_sigma():
    heat = gaussian_heatmaps([np.array([[10.0, 12.0, 14.0]])], [2.0], origin=(0, 0, 0), shape=(24, 24, 24))
    assert heat.shape == (1, 24, 24, 24)
    assert np.unravel_index(heat.argmax(), heat.shape[1:]) == (10, 12, 14)
    assert heat[0, 10, 12, 14] == pytest.approx(1.0)
    assert heat[0, 10, 12, 16] == pytest.approx(np.exp(-0.5), rel=1e-5)  # 2 voxels = 1 sigma away


def test_heatmap_uses_patch_coordinates_and_keeps_particles_cut_by_the_border():
    pts = np.array([[20.5, 20.0, 20.0], [31.0, 20.0, 20.0], [60.0, 60.0, 60.0]])
    heat = gaussian_heatmaps([pts], [1.5], origin=(10, 10, 10), shape=(20, 20, 20))
    assert heat[0, 10, 10, 10] == pytest.approx(heat[0, 11, 10, 10])  # 20.5 sits between voxels 20 and 21
    assert 0 < heat[0, 19, 10, 10] < 1  # the particle at z=31 lies just outside, its tail inside
    assert heat[0, :, 19, 19].max() < 1e-6  # the one at 60 is far away


def test_a_miss_costs_more_than_a_channel_firing_on_another_class_s_particle():
    target = torch.zeros(1, 2, 4, 4, 4)
    target[0, 0, 2, 2, 2] = 1.0  # one particle of class 0
    missed = torch.zeros_like(target)  # class 0 silent at its particle
    misnamed = target.clone()
    misnamed[0, 1, 2, 2, 2] = 1.0  # class 0 right, and class 1 fires there too
    loss = [weighted_mse(p, target, 10.0) for p in (missed, misnamed)]
    assert loss[1] * 10 < loss[0]  # a channel is weighed by its own class: the wrong one there is background


def test_removed_settings_are_unknown_but_members_that_record_them_still_fine_tune():
    for key, value in (("fg_scope", "any"), ("patch_max", 96)):  # removed: they made members worse
        with pytest.raises(SoupError, match=f"--set: unknown setting '{key}'"):
            override(TrainConfig(), {key: value})
    saved = dict(TrainConfig(steps=7).as_dict(), fg_scope="own", patch_max=0)  # a manifest written before
    assert TrainConfig.from_saved(saved) == TrainConfig(steps=7)


def test_augmentation_moves_image_and_target_together():
    rng = np.random.default_rng(0)
    for _ in range(20):
        image = np.zeros((16, 16, 16), np.float32)
        image[3, 5, 11] = 100.0
        target = gaussian_heatmaps([np.array([[3.0, 5.0, 11.0]])], [1.0], (0, 0, 0), (16, 16, 16))
        a, t = augment(image, target, rng, intensity=0.01)
        assert np.unravel_index(a.argmax(), a.shape) == np.unravel_index(t[0].argmax(), a.shape)


def test_randomisation_changes_nothing_when_off_and_zooms_particles_with_their_targets(volumes):
    classes, train, _ = volumes
    plain = PatchSampler(train, classes, 32, VOXEL_SIZE, 0.3, np.random.default_rng(5))
    off = PatchSampler(train, classes, 32, VOXEL_SIZE, 0.3, np.random.default_rng(5), randomisation=Randomisation())
    for _ in range(3):  # the same draws, the same patches: recipes without randomisation train as before
        (a, t), (b, u) = plain.sample(), off.sample()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(t, u)
    wide = Randomisation(scale=0.2, blur=1.0, noise_colour=2.0, gamma=0.3, contrast=0.3, spectrum=1.5)
    sampler = PatchSampler(train, classes, 32, VOXEL_SIZE, 0.3, np.random.default_rng(6), randomisation=wide)
    image, target = sampler.sample()
    assert image.shape == (1, 32, 32, 32) and target.shape == (len(classes), 32, 32, 32)
    assert np.isfinite(image).all() and target.max() <= 1.0 + 1e-6
    crop = np.zeros((16, 16, 16), np.float32)
    crop[5, 5, 5] = 1.0
    zoomed, factor = zoom_to(crop, 31)  # twice the size: crop voxel 5 lands on patch voxel 10
    assert factor == 2.0 and np.unravel_index(zoomed.argmax(), zoomed.shape) == (10, 10, 10)


def test_low_frequency_gain_moves_a_hollow_shells_bulk_and_keeps_its_ring():
    """A hollow shell (apo-ferritin's shape: radius 6 voxels, 2 thick) on a flat background. A gain below 1 takes
    bulk contrast away (the shell's surroundings swing the other way, as a high-passing engine draws a halo), above
    1 adds it; either way the ring stays where it was and the intensity scale is kept."""
    z, y, x = np.mgrid[:32, :32, :32] - 16
    r = np.sqrt(z**2 + y**2 + x**2)
    shell = ((r > 5) & (r < 7)).astype(np.float32)
    np.testing.assert_allclose(low_frequency_gain(shell, 1.0, 0.05), shell, atol=1e-5)
    halo = (r > 8) & (r < 11)
    for gain in (0.3, 3.0):
        out = low_frequency_gain(shell, gain, 0.05)
        assert out.std() == pytest.approx(shell.std(), rel=1e-4)
        assert out[(r > 5) & (r < 7)].mean() > out[halo].mean() + 0.5  # the ring is still the brightest thing
    high, low = low_frequency_gain(shell, 0.3, 0.05), low_frequency_gain(shell, 3.0, 0.05)
    assert high[halo].mean() < 0 < low[halo].mean()  # a halo of the other sign around a high-passed shell


def test_robust_normalisation_ignores_a_few_extreme_voxels():
    rng = np.random.default_rng(0)
    volume = rng.normal(5.0, 2.0, (40, 40, 40)).astype(np.float32)
    volume[rng.random(volume.shape) < 0.005] = 1e4  # gold, or a hot pixel streak
    centre, scale = normalisation_stats(volume, "robust")
    assert centre == pytest.approx(5.0, abs=0.1) and scale == pytest.approx(2.0, rel=0.05)
    assert normalisation_stats(volume)[1] > 50  # the mean and standard deviation follow the outliers


def test_settings_override_and_unknown_keys():
    cfg = override(TrainConfig(), parse_overrides(["steps=12", "lr=1e-4", "amp=bf16"]))
    assert (cfg.steps, cfg.lr, cfg.amp) == (12, 1e-4, "bf16")
    with pytest.raises(SoupError, match="unknown setting 'stpes'"):
        override(cfg, {"stpes": 3})
    with pytest.raises(SoupError, match="'steps' needs a whole number"):
        override(cfg, {"steps": 2.5})
    with pytest.raises(SoupError, match="expected key=value"):
        parse_overrides(["steps"])


@pytest.mark.parametrize("setting, error", [
    ({"patch": 30}, "'patch' 30: unet3d_tiny needs a multiple of 4; try 28 or 32"),
    ({"variant": "unet3d_large", "val_window": 40}, "'val_window' 40: unet3d_large needs a multiple of 16; try 32 "
                                                    "or 48"),
    ({"steps": 0}, "'steps' must be at least 1, got 0"),
    ({"batch_size": 0}, "'batch_size' must be at least 1, got 0"),
    ({"lr": -1}, r"'lr' must be > 0, got -1.0"),
    ({"sigma_scale": 0}, r"'sigma_scale' must be > 0, got 0.0"),
    ({"p_particle": 2}, r"'p_particle' must be in \[0, 1\], got 2.0"),
    ({"ema": 1}, r"'ema' must be in \[0, 1\) \(0: off\), got 1.0"),
    ({"variant": "unet3d_huge"}, "unknown model 'unet3d_huge'"),
    ({"normalisation": "minmax"}, "'normalisation' must be one of zscore, robust, got 'minmax'"),
    ({"aug_scale": 0.6}, r"'aug_scale' must be in \[0, 0.5\), got 0.6"),
    ({"aug_blur": -1}, r"'aug_blur' must be >= 0, got -1.0"),
])
def test_settings_that_would_crash_or_train_nothing_are_refused_up_front(setting, error):
    with pytest.raises(SoupError, match=f"^--set: {error}"):
        override(TrainConfig(), setting)


@pytest.fixture
def volumes(project):
    root = open_project(project)
    classes = classes_from_root(root)
    train = load_volumes(root, root.runs[:1], ["denoised"], classes, VOXEL_SIZE, "curation", "0")
    val = load_volumes(root, root.runs[1:], ["denoised"], classes, VOXEL_SIZE, "curation", "0")
    return classes, train, val


def test_patch_larger_than_the_tomogram_names_the_run(volumes):
    classes, train, _ = volumes
    with pytest.raises(SoupError, match="run exp_000: patch 96 is larger than its tomogram"):
        PatchSampler(train, classes, 96, VOXEL_SIZE, 0.3, np.random.default_rng(0))


def test_runs_without_picks_or_with_nan_are_skipped_with_a_warning(root):
    classes = classes_from_root(root)
    warnings = []
    vols = load_volumes(root, root.runs, ["wbp"], classes, VOXEL_SIZE, "nobody", "0", warn=warnings.append)
    assert vols == [] and len(warnings) == 2 and "run exp_000: no picks by user 'nobody'" in warnings[0]
    tomogram = root.runs[0].voxel_spacings[0].get_tomograms("wbp")[0]
    import zarr

    array = zarr.open(tomogram.zarr())["0"]
    array[5, 5, 5] = np.nan
    warnings.clear()
    vols = load_volumes(root, root.runs, ["wbp"], classes, VOXEL_SIZE, "curation", "0", warn=warnings.append)
    assert [v.run for v in vols] == ["exp_001"]
    assert warnings == ["run exp_000: tomogram 'wbp' has NaN or infinite values; skipped"]


def test_false_peaks_are_those_away_from_every_particle():
    truth = np.array([[10.0, 10.0, 10.0], [30.0, 30.0, 30.0]])
    peaks = np.array([[11.0, 10.0, 10.0], [20.0, 20.0, 20.0], [30.0, 30.0, 35.0]])
    assert false_peaks(peaks, truth, radius=3.0).tolist() == [[20.0, 20.0, 20.0], [30.0, 30.0, 35.0]]
    assert len(false_peaks(peaks, np.zeros((0, 3)), 3.0)) == 3


class Echo(torch.nn.Module):
    """A stand-in network whose heatmap for every class is its input: a bright voxel is a peak of each class."""

    def __init__(self, n_classes):
        super().__init__()
        self.n_classes = n_classes

    def forward(self, x):
        return x.repeat(1, self.n_classes, 1, 1, 1)


def test_hard_negatives_are_the_model_s_peaks_that_match_no_particle_of_their_class(volumes):
    classes = volumes[0]
    particle, empty = (20, 40, 40), (30, 80, 80)
    points = [np.zeros((0, 3))] * len(classes)
    points[0] = np.array([particle], float)  # a particle of the first class
    points[1] = np.array([[20.0, 40.0, 44.0]])  # and one of the second, within its radius of that spot
    image = np.zeros((48, 96, 96), np.float32)
    image[particle] = image[empty] = 1.0  # two bright voxels: peaks of every class
    cfg = TrainConfig(val_window=32, hard_threshold=0.5, amp="none")
    [mined] = mine_negatives(Echo(len(classes)), [TrainVolume("r", "denoised", image, points)], classes, cfg,
                             VOXEL_SIZE, "cpu")
    rows = [tuple(int(v) for v in r) for r in np.round(mined)]
    assert rows.count(empty) == len(classes)  # a false peak of every class
    assert rows.count(particle) == len(classes) - 2  # not of the two classes annotated there
    assert len(rows) == 2 * len(classes) - 2


def test_patches_centre_on_hard_negatives_once_they_are_mined(volumes):
    classes, train, _ = volumes
    sampler = PatchSampler(train, classes, 16, VOXEL_SIZE, 0.3, np.random.default_rng(0), p_particle=0.0,
                           p_hard=1.0, augment_data=False)
    spot = np.array([30.0, 60.0, 70.0])
    before = [sampler.origin(0) for _ in range(50)]
    assert not all(np.all(np.abs(o + 8 - spot) <= 0.3 * 16 + 1) for o in before)  # uniform until mined
    sampler.negatives = [spot[None]]
    for _ in range(50):
        assert np.all(np.abs(sampler.origin(0) + 8 - spot) <= 0.3 * 16 + 1)


def test_training_mines_hard_negatives_every_hard_every_steps(volumes, tmp_path, capsys):
    classes, train, val = volumes
    cfg = TrainConfig(variant="unet3d_test", patch=16, steps=6, val_every=6, val_window=32, p_hard=0.5, hard_every=3,
                      hard_threshold=0.1)
    train_member(cfg, classes, train, val, tmp_path / "m", VOXEL_SIZE, "denoised")
    mined = [line for line in capsys.readouterr().out.splitlines() if line.startswith("hard negatives:")]
    assert len(mined) == 2 and "in 1 training volume(s)" in mined[0]


def test_tiny_trains_loss_falls_and_checkpoint_round_trips(volumes, tmp_path):
    """Five epochs of 8 steps (per-step losses are too coarse to compare); without validation runs every epoch's
    weights are saved, the last one too. Validation's part: the hard-negative and val_window tests."""
    from copick_soup.model.checkpoint import load_member

    classes, train, _ = volumes
    cfg = TrainConfig(variant="unet3d_tiny", patch=32, batch_size=2, steps=40, lr=3e-3, warmup=4, val_every=8,
                      seed=2)
    best = train_member(cfg, classes, train, [], tmp_path / "m", VOXEL_SIZE, "denoised")
    history = json.loads((tmp_path / "m" / "state.json").read_text())["history"]
    assert [h["step"] for h in history] == [8, 16, 24, 32, 40]
    losses = [h["loss"] for h in history]
    assert np.mean(losses[-2:]) < 0.5 * losses[0]
    log = (tmp_path / "m" / "log.csv").read_text().splitlines()
    assert len(log) == 6 and (tmp_path / "m" / "curve.png").exists()
    model, manifest = load_member(best)
    again, _ = load_member(best)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    assert manifest.class_names == [c.name for c in classes]
    assert manifest.tomo_type == "denoised" and manifest.training["step"] == 40


@pytest.mark.parametrize("layers, trained", [("decoder", {"ups", "decoders", "head"}), ("head", {"head"})])
def test_a_fine_tune_updates_only_the_layers_it_trains(volumes, tmp_path, layers, trained):
    """train_layers freezes the rest: every frozen tensor leaves the fine-tune bit for bit as it came, every trained
    one changes."""
    from copick_soup.model.checkpoint import load_member

    classes, train, _ = volumes
    cfg = TrainConfig(variant="unet3d_test", patch=16, steps=3, val_every=3, seed=3)
    start = train_member(cfg, classes, train, [], tmp_path / "start", VOXEL_SIZE, "denoised")
    tuned = train_member(override(cfg, {"train_layers": layers, "lr": 1e-2}), classes, train, [], tmp_path / layers,
                         VOXEL_SIZE, "denoised", init=start)
    before, after = load_member(start)[0].state_dict(), load_member(tuned)[0].state_dict()
    changed = {name.split(".")[0] for name in before if not torch.equal(before[name], after[name])}
    assert changed == trained
    assert all(not torch.equal(before[n], after[n]) for n in before if n.split(".")[0] in trained)
    with pytest.raises(SoupError, match="'train_layers' must be one of all, decoder, head, got 'encoder'"):
        override(cfg, {"train_layers": "encoder"})


def test_resume_continues_from_the_saved_step(volumes, tmp_path):
    classes, train, _ = volumes
    cfg = TrainConfig(variant="unet3d_test", patch=16, steps=6, val_every=3, seed=3)
    train_member(cfg, classes, train, [], tmp_path / "m", VOXEL_SIZE, "denoised")
    messages = []
    longer = override(cfg, {"steps": 9})
    train_member(longer, classes, train, [], tmp_path / "m", VOXEL_SIZE, "denoised", resume=True,
                 echo=messages.append)
    assert messages == ["resuming m at step 6"]
    history = json.loads((tmp_path / "m" / "state.json").read_text())["history"]
    assert [h["step"] for h in history] == [3, 6, 9]
    with pytest.raises(SoupError, match="saved for other classes or another variant or norm"):
        train_member(override(longer, {"steps": 12}), classes[:2], train, [], tmp_path / "m", VOXEL_SIZE,
                     "denoised", resume=True)


def test_validation_cuts_each_class_at_its_best_threshold(tmp_path):
    """Faint but well-placed peaks (0.1) score nothing at one fixed threshold of 0.25; the sweep finds them, and
    the thresholds it chose are what a held-out run is then cut at."""
    from copick_soup.objects import ParticleClass
    from copick_soup.train.dataset import TrainVolume
    from copick_soup.train.targets import class_sigmas

    cls = ParticleClass("a", 1, radius=60.0)
    points = [np.array([[10.0, 12.0, 20.0], [20.0, 40.0, 30.0], [12.0, 30.0, 50.0]])]
    image = gaussian_heatmaps(points, class_sigmas([cls], VOXEL_SIZE, 0.3), (0, 0, 0), (32, 64, 64))[0]
    model = torch.nn.Conv3d(1, 1, 1, bias=False)
    torch.nn.init.constant_(model.weight, 0.1)  # the "network" returns the truth heatmap at a tenth of its height
    volume = [TrainVolume("r", "denoised", image, points)]
    cfg = TrainConfig(val_window=32)
    fixed, _ = validate(model, volume, [cls], TrainConfig(val_window=32, val_sweep=False), VOXEL_SIZE, "cpu")
    swept, thresholds = validate(model, volume, [cls], cfg, VOXEL_SIZE, "cpu")
    assert fixed.weighted == 0.0 and swept.weighted == 1.0 and 0.05 <= thresholds["a"] < 0.1
    held_out, used = validate(model, volume, [cls], cfg, VOXEL_SIZE, "cpu", thresholds={"a": 0.2})
    assert held_out.weighted == 0.0 and used == {"a": 0.2}


def test_validation_with_val_window_0_uses_the_crop_tiling_pick_chooses(volumes):
    from copick_soup.model.registry import create_model
    from copick_soup.train.validation import val_settings

    classes, _, val = volumes
    cfg = TrainConfig(variant="unet3d_test", val_window=0)
    model = create_model("unet3d_test", n_classes=len(classes))
    assert val_settings(cfg, "cpu").tiling(val[0].image.shape, [model.config]).blend == "crop"
    assert val_settings(TrainConfig(variant="unet3d_test", val_window=32), "cpu").tiling(
        val[0].image.shape, [model.config]) == Tiling.cube(32)
    score, thresholds = validate(model, val, classes, cfg, VOXEL_SIZE, "cpu")
    assert 0.0 <= score.weighted <= 1.0 and set(thresholds) == {c.name for c in classes}
    with pytest.raises(SoupError, match="'val_window' must be at least 0"):
        TrainConfig(val_window=-1)


def test_a_batch_norm_member_trains_keeps_its_statistics_and_is_not_mixed_with_instance_norms(volumes, tmp_path):
    from copick_soup.model.checkpoint import load_member

    classes, train, _ = volumes
    cfg = TrainConfig(variant="unet3d_test", patch=16, steps=4, val_every=4, ema=0.5, norm="batch", seed=4)
    best = train_member(cfg, classes, train, [], tmp_path / "m", VOXEL_SIZE, "denoised")
    model, manifest = load_member(best)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm3d)]
    assert manifest.unet["norm"] == "batch" and manifest.training["config"]["norm"] == "batch" and norms
    assert all(not torch.allclose(n.running_var, torch.ones_like(n.running_var)) for n in norms)  # learnt, EMA'd
    with pytest.raises(SoupError, match="its U-Net has batch norms, the model being trained instance norms"):
        train_member(override(cfg, {"norm": "instance"}), classes, train, [], tmp_path / "i", VOXEL_SIZE,
                     "denoised", init=best)
    with pytest.raises(SoupError, match="saved for other classes or another variant or norm"):
        train_member(override(cfg, {"norm": "instance", "steps": 8}), classes, train, [], tmp_path / "m",
                     VOXEL_SIZE, "denoised", resume=True)
    with pytest.raises(SoupError, match="^norm: choose one of instance, batch, fixed, got 'group'$"):
        TrainConfig(norm="group")
