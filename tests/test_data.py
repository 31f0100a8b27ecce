"""The copick data layer: opening projects, choosing runs, lazy tomograms, all-or-nothing picks."""

import json

import numpy as np
import pytest
import zarr

from copick_soup.data import open_project, open_tomogram, read_picks, select_runs, write_picks
from copick_soup.data.tomogram import available_tomo_types
from copick_soup.errors import SoupError
from copick_soup.objects import VOXEL_SIZE


def test_missing_config(tmp_path):
    with pytest.raises(SoupError, match="nope.json: no such copick config file"):
        open_project(tmp_path / "nope.json")


def test_config_that_is_not_json(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{ not json")
    with pytest.raises(SoupError, match="bad.json: not valid JSON"):
        open_project(path)


def test_config_that_is_not_a_copick_config(tmp_path):
    path = tmp_path / "odd.json"
    path.write_text(json.dumps({"config_type": "filesystem", "overlay_root": "local:///tmp/x"}))
    with pytest.raises(SoupError, match="odd.json: not a valid copick config.*pickable_objects"):
        open_project(path)


def test_select_runs(root):
    assert [r.name for r in select_runs(root)] == ["exp_000", "exp_001"]
    assert [r.name for r in select_runs(root, ["exp_001", "exp_000"])] == ["exp_001", "exp_000"]
    with pytest.raises(SoupError, match="unknown run.*TS_99.*has exp_000, exp_001"):
        select_runs(root, ["exp_000", "TS_99"])


def test_tomogram_window_is_read_lazily_and_matches_the_full_volume(root):
    run = root.runs[0]
    array = open_tomogram(run, VOXEL_SIZE, "denoised")
    assert isinstance(array.array, zarr.Array)  # nothing read yet: slicing reads only the touched chunks
    window = array[10:42, 30:94, 5:69]
    assert window.shape == (32, 64, 64)
    np.testing.assert_array_equal(window, array[:][10:42, 30:94, 5:69])


def test_missing_tomogram_type_lists_the_types_there_are(root):
    with pytest.raises(SoupError, match="exp_000: no tomogram of type 'isonetcorrected'.*denoised, wbp"):
        open_tomogram(root.runs[0], VOXEL_SIZE, "isonetcorrected")
    assert available_tomo_types(root.runs[0], VOXEL_SIZE) == ["ctfdeconvolved", "denoised", "wbp"]


def test_missing_voxel_size_lists_the_sizes_there_are(root):
    with pytest.raises(SoupError, match="no voxel size 7.84 Å; it has 10.012"):
        open_tomogram(root.runs[0], 7.84, "wbp")
    assert available_tomo_types(root.runs[0], 7.84) == []


def test_voxel_size_matches_within_a_rounding_error(root):
    assert open_tomogram(root.runs[0], 10.0120004, "wbp").shape == (64, 128, 128)


def picks_for(names, n=3, seed=0):
    rng = np.random.default_rng(seed)
    return {name: (rng.uniform(0, 1000, (n, 3)), rng.uniform(0, 1, n)) for name in names}


def test_picks_round_trip_in_angstrom_with_scores(root):
    run = root.runs[0]
    written = picks_for(["ribosome", "apo-ferritin"])
    written["thyroglobulin"] = (np.zeros((0, 3)), np.zeros(0))
    write_picks(run, written, "tester", "1")
    back = read_picks(run, list(written), "tester", "1", with_scores=True)
    for name, (pos, scores) in written.items():
        np.testing.assert_allclose(back[name][0], pos)
        np.testing.assert_allclose(back[name][1], scores)
    assert run.get_picks(object_name="thyroglobulin", user_id="tester", session_id="1")  # empty file recorded


def test_existing_picks_are_refused_then_replaced_with_overwrite(root):
    run = root.runs[0]
    first, second = picks_for(["ribosome"], seed=1), picks_for(["ribosome"], seed=2)
    write_picks(run, first, "tester", "1")
    with pytest.raises(SoupError, match="exp_000: picks by user 'tester' session '1' already exist for ribosome"):
        write_picks(run, second, "tester", "1")
    np.testing.assert_allclose(read_picks(run, ["ribosome"], "tester", "1")["ribosome"], first["ribosome"][0])
    write_picks(run, second, "tester", "1", overwrite=True)
    np.testing.assert_allclose(read_picks(run, ["ribosome"], "tester", "1")["ribosome"], second["ribosome"][0])


def test_a_failed_write_leaves_the_run_as_it_was(root):
    run = root.runs[0]
    old = picks_for(["ribosome"], seed=1)
    write_picks(run, old, "tester", "1")
    new = picks_for(["ribosome", "apo-ferritin", "not-a-class"], seed=2)
    with pytest.raises(SoupError, match="writing picks failed, nothing was changed"):
        write_picks(run, new, "tester", "1", overwrite=True)
    np.testing.assert_allclose(read_picks(run, ["ribosome"], "tester", "1")["ribosome"], old["ribosome"][0])
    assert not run.get_picks(object_name="apo-ferritin", user_id="tester", session_id="1")


def test_reading_picks_that_do_not_exist_gives_empty_arrays(root):
    picks = read_picks(root.runs[0], ["ribosome"], "nobody", "0")
    assert picks["ribosome"].shape == (0, 3)


def test_an_overlay_that_cannot_be_written_is_a_clear_error(project, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = json.loads(project.read_text())
    config["static_root"] = config["overlay_root"]
    config["overlay_root"] = f"local://{blocker}/overlay"
    path = tmp_path / "readonly.json"
    path.write_text(json.dumps(config))
    run = open_project(path).runs[0]
    with pytest.raises(SoupError, match="exp_000: writing picks failed"):
        write_picks(run, picks_for(["ribosome"]), "tester", "1")


def test_ids_with_characters_copick_rewrites_still_find_their_picks(root):
    run = root.runs[0]
    write_picks(run, picks_for(["ribosome"], seed=4), "my_lab", "run_1")
    np.testing.assert_allclose(read_picks(run, ["ribosome"], "my_lab", "run_1")["ribosome"],
                               picks_for(["ribosome"], seed=4)["ribosome"][0])
    with pytest.raises(SoupError, match="already exist"):
        write_picks(run, picks_for(["ribosome"], seed=5), "my_lab", "run_1")


def test_overwrite_replaces_a_picks_file_left_truncated_by_a_killed_writer(project):
    run = open_project(project).runs[0]
    write_picks(run, picks_for(["ribosome"], n=50, seed=6), "tester", "1")
    path = run.get_picks(object_name="ribosome", user_id="tester", session_id="1")[0].path
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])  # what a process killed in the middle of json.dump leaves
    run = open_project(project).runs[0]
    new = picks_for(["ribosome"], seed=7)
    write_picks(run, new, "tester", "1", overwrite=True)
    back = read_picks(open_project(project).runs[0], ["ribosome"], "tester", "1")["ribosome"]
    np.testing.assert_allclose(back, new["ribosome"][0])


def test_only_transport_errors_are_retried():
    from copick_soup.data.retry import is_transport_error, with_retries

    calls = []

    def corrupt():
        calls.append(1)
        raise RuntimeError("error during blosc decompression: -1")

    with pytest.raises(SoupError, match=r"chunk: unreadable data \(RuntimeError: error during blosc decompression: "
                                        r"-1\); not retried"):
        with_retries(corrupt, "chunk", attempts=3)
    assert len(calls) == 1  # decoded once: blosc may crash the process on a second try (numcodecs#228)

    def flaky():
        calls.append(1)
        if len(calls) < 4:
            raise ConnectionError("reset by peer")
        return "data"

    assert with_retries(flaky, "chunk", attempts=3) == "data" and len(calls) == 4
    assert is_transport_error(TimeoutError()) and is_transport_error(FileNotFoundError("s3://bucket/key"))
    assert not is_transport_error(ValueError("bad shape"))
