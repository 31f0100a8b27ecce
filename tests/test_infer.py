"""Inference pieces: peaks to Å, streamed peaks, seamless blending, TTA equivariance."""

import numpy as np
import pytest
import torch

from copick_soup.ensemble.overlap import suppress_overlaps
from copick_soup.ensemble.peaks import PeakStream, heatmaps_to_picks, local_maxima
from copick_soup.ensemble.runtimes import TorchPredictor
from copick_soup.ensemble.tiling import Tiling, window_starts
from copick_soup.ensemble.tta import VIEWS, apply_view, tta_views, undo_view
from copick_soup.ensemble.windows import Source, predict_volume, stream_heatmaps
from copick_soup.objects import ParticleClass

VS = 10.012
A = ParticleClass("a", 1, radius=60.0)  # 6 voxels: NMS cube of side 7
B = ParticleClass("b", 2, radius=150.0)


def blob(shape, center, sigma=1.5, height=1.0):
    grids = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    d2 = sum((g - c) ** 2 for g, c in zip(grids, center))
    return (height * np.exp(-0.5 * d2 / sigma**2)).astype(np.float32)


def test_known_peaks_come_back_as_exact_angstrom_coordinates():
    shape = (40, 50, 60)
    heat = np.zeros((2, *shape), np.float32)
    heat[0] = blob(shape, (10, 20, 30)) + blob(shape, (30, 35, 12.5), height=0.8)
    heat[1] = blob(shape, (20.25, 25, 40), sigma=3.0, height=0.6)
    picks = heatmaps_to_picks(heat, [A, B], VS, {"a": 0.5, "b": 0.5})
    pos_a, scores_a = picks["a"]
    assert len(pos_a) == 2  # the peak between two voxels is found once
    np.testing.assert_allclose(pos_a[0], [30 * VS, 20 * VS, 10 * VS], atol=1e-6)  # (x, y, z) in Å
    np.testing.assert_allclose(pos_a[1], [12.5 * VS, 35 * VS, 30 * VS], atol=0.05 * VS)  # between voxels
    assert scores_a[0] == pytest.approx(1.0) and scores_a[1] < scores_a[0]
    np.testing.assert_allclose(picks["b"][0], [[40 * VS, 25 * VS, 20.25 * VS]], atol=0.05 * VS)


def test_thresholds_are_per_class_and_nms_keeps_one_peak_per_particle():
    shape = (30, 30, 30)
    heat = np.zeros((2, *shape), np.float32)
    heat[0] = blob(shape, (15, 15, 15)) + 0.05 * blob(shape, (15, 15, 18), sigma=0.5)  # a shoulder, not a peak
    heat[1] = blob(shape, (15, 15, 15), height=0.4)
    picks = heatmaps_to_picks(heat, [A, B], VS, {"a": 0.3, "b": 0.5})
    assert len(picks["a"][0]) == 1 and len(picks["b"][0]) == 0


def test_tiled_peak_search_matches_one_pass_over_the_block():
    from scipy.ndimage import maximum_filter

    rng = np.random.default_rng(3)
    block = np.zeros((20, 45, 52), np.float32)
    for _ in range(40):  # crowded, so peaks fall on tile borders and in the halos
        block += blob(block.shape, rng.uniform(0, block.shape), sigma=1.3, height=rng.uniform(0.2, 1))
    block[5, 8:10, 16] = block.max() + 1  # a flat top that straddles a tile border (tile 8)
    r, threshold = 3, 0.25
    pooled = maximum_filter(block, size=2 * r + 1, mode="constant", cval=-np.inf)
    expected = np.argwhere((block == pooled) & (block > threshold))
    expected = expected[expected[:, 0] >= 4]
    expected = expected[~((expected == [5, 9, 16]).all(axis=1))]  # the flat top's second voxel
    tiled = local_maxima(block, r, threshold, 4, 20, tile=8)
    assert len(expected) > 20
    np.testing.assert_array_equal(tiled, expected)


def test_a_stronger_peak_of_another_class_suppresses_a_pick_on_the_same_particle():
    def picks(*rows):  # (x, score) along one line, strongest first as the peak search returns them
        rows = sorted(rows, key=lambda r: -r[1])
        return (np.array([[x, 0.0, 0.0] for x, _ in rows]).reshape(-1, 3), np.array([s for _, s in rows]))

    found = {"a": picks((0, 0.9), (10, 0.7), (1000, 0.4), (2000, 0.6)),
             "b": picks((20, 0.5), (500, 0.5), (1010, 0.8), (2000, 0.6))}
    kept = suppress_overlaps(found, [A, B], 0.5)  # within 0.5 x min(60, 150) = 30 Å
    np.testing.assert_array_equal(kept["a"][0][:, 0], [0, 10, 2000])  # same class: NMS's job; ties both stay
    np.testing.assert_array_equal(kept["b"][0][:, 0], [1010, 2000, 500])  # still strongest first
    assert suppress_overlaps(found, [A, B], 0.0) is found
    np.testing.assert_array_equal(suppress_overlaps(found, [A, B], 1.0)["b"][0][:, 0], [1010, 2000, 500])
    assert len(suppress_overlaps(found, [A, B], 0.1)["b"][0]) == 4  # every clash is 10-20 Å apart: beyond 6 Å


def test_streamed_peaks_match_whole_volume_peaks():
    rng = np.random.default_rng(0)
    shape = (70, 32, 32)
    heat = np.zeros((2, *shape), np.float32)
    for _ in range(25):
        c = rng.uniform(0, shape)
        heat[int(rng.integers(2))] += blob(shape, c, sigma=1.2, height=rng.uniform(0.3, 1))
    whole = heatmaps_to_picks(heat, [A, B], VS, 0.2)
    stream = PeakStream([A, B], VS, 0.2, shape)
    on_device = PeakStream([A, B], VS, 0.2, shape)  # torch tensors, as beside a GPU (here on the CPU)
    buffer = np.empty((2, 23, *shape[1:]), np.float32)  # reused for every chunk, as stream_heatmaps does
    for z0, z1 in [(0, 9), (9, 10), (10, 33), (33, 48), (48, 70)]:
        chunk = buffer[:, :z1 - z0]
        chunk[:] = heat[:, z0:z1]
        stream.add(z0, chunk)
        on_device.add(z0, torch.from_numpy(chunk))
        buffer[:] = -1.0  # what the stream keeps, it copied
    for streamed in (stream.picks(), on_device.picks()):
        for name in ("a", "b"):
            assert len(whole[name][0]) > 0
            np.testing.assert_allclose(streamed[name][0], whole[name][0])
            np.testing.assert_allclose(streamed[name][1], whole[name][1])


def test_the_max_pool_peak_search_finds_scipy_s_peaks_plateaus_included():
    rng = np.random.default_rng(5)
    block = np.zeros((20, 45, 52), np.float32)
    for _ in range(40):
        block += blob(block.shape, rng.uniform(0, block.shape), sigma=1.3, height=rng.uniform(0.2, 1))
    block[5, 8:10, 16] = block.max() + 1  # a flat top: one of its two voxels is kept
    block = block.astype(np.float16)  # as the accumulator streams them
    expected = local_maxima(block, 3, 0.25, 4, 17)
    assert len(expected) > 15
    np.testing.assert_array_equal(local_maxima(torch.from_numpy(block), 3, 0.25, 4, 17), expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (make bench-gpu runs it)")
def test_peaks_found_on_a_gpu_are_those_found_on_the_host():
    rng = np.random.default_rng(6)
    heat = np.zeros((2, 40, 64, 64), np.float32)
    for _ in range(30):
        heat[int(rng.integers(2))] += blob(heat.shape[1:], rng.uniform(0, heat.shape[1:]), height=rng.uniform(0.3, 1))
    host, device = PeakStream([A, B], VS, 0.2, heat.shape[1:]), PeakStream([A, B], VS, 0.2, heat.shape[1:])
    gpu = torch.from_numpy(heat).cuda()
    for z0 in range(0, 40, 16):
        host.add(z0, heat[:, z0:z0 + 16])
        device.add(z0, gpu[:, z0:z0 + 16])
    for name in ("a", "b"):
        np.testing.assert_allclose(device.picks()[name][0], host.picks()[name][0], atol=1e-6)


def test_streamed_planes_say_whether_the_consumer_owns_them():
    volume = np.random.default_rng(1).normal(size=(80, 40, 40)).astype(np.float32)
    chunks = []
    for chunk in stream_heatmaps([Source(identity, volume, 1.0, (0.0, 1.0))], 1, tiling=32):
        chunks.append(chunk)
        assert not chunk.owned  # on a CPU: views of the accumulator
    assert len({c.planes.__array_interface__["data"][0] for c in chunks}) == 1  # the same buffer every time


def test_window_starts_cover_the_axis():
    assert window_starts(184, 64, 0.25) == [0, 48, 96, 120]
    assert window_starts(50, 64, 0.25) == [0]


def identity(batch):
    return batch  # (B, 1, w, w, w) -> one "class": the input itself


def test_blending_leaves_no_seams():
    """With a network that returns its input, blended windows must rebuild the normalised volume exactly."""
    rng = np.random.default_rng(1)
    volume = rng.normal(size=(70, 90, 100)).astype(np.float32)
    out = predict_volume(identity, volume, 1, tiling=Tiling.cube(32, 0.3), batch_size=3, stats=(0.0, 1.0))
    np.testing.assert_allclose(out[0], volume, atol=1e-5)
    ones = predict_volume(lambda b: np.ones((len(b), 2, 32, 32, 32), np.float32), volume, 2, tiling=32,
                          stats=(0.0, 1.0))
    np.testing.assert_allclose(ones, 1.0, atol=1e-6)


def test_ensemble_is_the_weighted_mean_of_its_members():
    volume = np.random.default_rng(2).normal(size=(40, 40, 40)).astype(np.float32)
    sources = [Source(lambda b: np.full((len(b), 1, 32, 32, 32), 1.0, np.float32), volume, 3.0, (0.0, 1.0)),
               Source(lambda b: np.full((len(b), 1, 32, 32, 32), 5.0, np.float32), volume, 1.0, (0.0, 1.0))]
    planes = np.concatenate([c.planes.copy() for c in stream_heatmaps(sources, 1, tiling=32)], axis=1)
    np.testing.assert_allclose(planes, 2.0, atol=1e-5)  # (3 * 1 + 1 * 5) / 4


def test_each_zarr_chunk_is_decoded_once_and_slabs_are_unchanged():
    from collections import Counter
    from collections.abc import MutableMapping

    import zarr

    class CountingStore(MutableMapping):
        def __init__(self):
            self.data, self.reads = {}, Counter()

        def __getitem__(self, key):
            if not key.split("/")[-1].startswith("."):
                self.reads[key] += 1
            return self.data[key]

        def __setitem__(self, key, value):
            self.data[key] = value

        def __delitem__(self, key):
            del self.data[key]

        def __contains__(self, key):  # the mixin's would count a read
            return key in self.data

        def __iter__(self):
            return iter(self.data)

        def __len__(self):
            return len(self.data)

    volume = np.random.default_rng(8).normal(size=(70, 40, 50)).astype(np.float32)
    store = CountingStore()
    array = zarr.array(volume, chunks=(48, 32, 32), store=store, dimension_separator="/")
    store.reads.clear()  # writing read some
    sources = [Source(identity, array, 1.0, (0.5, 2.0))]
    streamed = np.concatenate([c.planes.copy() for c in stream_heatmaps(sources, 1, tiling=16)], axis=1)
    assert set(store.reads.values()) == {1} and len(store.reads) == 2 * 2 * 2  # every chunk, once
    np.testing.assert_allclose(streamed[0], (volume - 0.5) / 2.0, atol=1e-5)


def test_volume_smaller_than_the_window():
    volume = np.random.default_rng(3).normal(size=(20, 30, 40)).astype(np.float32)
    out = predict_volume(identity, volume, 1, tiling=48, stats=(0.0, 1.0))
    np.testing.assert_allclose(out[0], volume, atol=1e-5)


def test_views_are_undone_exactly():
    x = np.random.default_rng(4).normal(size=(1, 2, 4, 6, 6))
    for view in VIEWS:
        np.testing.assert_array_equal(undo_view(apply_view(x, view), view), x)
        t = torch.from_numpy(x.copy())
        assert torch.equal(undo_view(apply_view(t, view), view), t)


def d4_symmetric(shape):
    """A volume unchanged by every in-plane rotation and x flip: radial in (y, x), anything in z."""
    z, y, x = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    c = (shape[1] - 1) / 2
    r = np.sqrt((y - c) ** 2 + (x - c) ** 2)
    return np.sin(r / 2) * (1 + z / shape[0]) + np.cos(z)


@pytest.mark.parametrize("n", [2, 4, 8])
def test_tta_of_a_symmetric_input_is_symmetric(n):
    from copick_soup.model import create_model

    torch.manual_seed(0)
    predictor = TorchPredictor(create_model("unet3d_test", n_classes=2).eval(), views=tta_views(n))
    x = d4_symmetric((16, 16, 16))[None, None]
    out = predictor(x)
    for view in VIEWS[:n]:  # the first n views form a group
        np.testing.assert_allclose(apply_view(out, view), out, atol=1e-5)
    plain = TorchPredictor(predictor.model, views=tta_views(1))(x)
    assert not np.allclose(apply_view(plain, VIEWS[2]), plain, atol=1e-5)  # without TTA it is not


def test_tta_is_equivariant_for_any_input():
    from copick_soup.model import create_model

    torch.manual_seed(1)
    predictor = TorchPredictor(create_model("unet3d_test", n_classes=1).eval(), views=tta_views(8))
    x = np.random.default_rng(5).normal(size=(1, 1, 16, 16, 16)).astype(np.float32)
    out = predictor(x)
    for view in VIEWS:
        np.testing.assert_allclose(predictor(np.ascontiguousarray(apply_view(x, view))), apply_view(out, view),
                                   atol=1e-5)


def test_windows_per_network_call_do_not_change_the_heatmap():
    """pick batches 1 window per call on a CPU and 4 on a GPU: the same network must give the same heatmap."""
    from copick_soup.model import create_model

    torch.manual_seed(2)
    predictor = TorchPredictor(create_model("unet3d_test", n_classes=2).eval())
    volume = np.random.default_rng(8).normal(size=(40, 50, 70)).astype(np.float32)
    one, four = (predict_volume(predictor, volume, 2, tiling=32, batch_size=b) for b in (1, 4))
    assert np.abs(one).max() > 0.01
    np.testing.assert_allclose(one, four, atol=1e-5 * np.abs(four).max())
    np.testing.assert_array_equal(predict_volume(predictor, volume, 2, tiling=32), one)  # the CPU default is 1


def test_weights_cast_once_give_autocast_s_output_to_the_bit():
    from copick_soup.model import create_model

    torch.manual_seed(3)
    model = create_model("unet3d_test", n_classes=2).eval()
    x = torch.randn(2, 1, 16, 16, 16)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        expected = model(x).float()
    predictor = TorchPredictor(model, "cpu", torch.bfloat16)
    assert predictor.model.head.weight.dtype == torch.bfloat16 and model.head.weight.dtype == torch.float32
    torch.testing.assert_close(predictor(x), expected, rtol=0, atol=0)


def test_float16_accumulator_stays_within_a_thousandth():
    rng = np.random.default_rng(6)
    volume = rng.uniform(0, 1, size=(40, 50, 60)).astype(np.float32)
    sources = [Source(identity, volume, 1.0, (0.0, 1.0))]
    half = np.concatenate([c.planes.astype(np.float32) for c in stream_heatmaps(sources, 1, 32, dtype=np.float16)], 1)
    np.testing.assert_allclose(half[0], volume, atol=2e-3)


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
def test_streaming_on_a_gpu_matches_the_cpu(monkeypatch):
    import copy

    from copick_soup.device import amp_dtype
    from copick_soup.model import create_model

    torch.manual_seed(0)
    model = create_model("unet3d_test", n_classes=2).eval()
    volume = np.random.default_rng(7).normal(size=(40, 70, 90)).astype(np.float32)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)  # TF32 convolutions differ by ~1e-3
    cpu = predict_volume(TorchPredictor(model), volume, 2, tiling=32)
    gpu = predict_volume(TorchPredictor(copy.deepcopy(model).cuda(), "cuda"), volume, 2, tiling=32, device="cuda")
    np.testing.assert_allclose(gpu, cpu, atol=1e-4 * abs(cpu).max())  # the same windows, weights, sums
    # pick's settings: autocast and a float16 accumulator on the GPU, peaks on a worker thread
    fast = TorchPredictor(copy.deepcopy(model).cuda(), "cuda", amp_dtype("auto", "cuda"))
    chunks = list(stream_heatmaps([Source(fast, volume)], 2, 32, dtype=np.float16, device="cuda"))
    assert all(c.owned for c in chunks)
    planes = [c.planes for c in chunks]
    half = np.concatenate(planes, axis=1).astype(np.float32)  # kept uncopied: each chunk is an array of its own
    assert abs(half - cpu).max() < 0.05 * abs(cpu).max()
