"""The command line: help texts, plugin discovery, end-to-end simulate + score, one-line errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from copick_soup.cli import main

BIN = Path(sys.executable).parent


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.mark.parametrize("command", [[], ["simulate"], ["score"], ["demo"]])
def test_help(command):
    result = invoke(*command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output


def test_copick_discovers_the_evaluation_plugin():
    out = subprocess.run([BIN / "copick", "evaluation", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "soup-score" in out.stdout
    out = subprocess.run([BIN / "copick", "evaluation", "soup-score", "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and "--candidate-user" in out.stdout


def test_console_script_runs():
    out = subprocess.run([BIN / "copick-soup", "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "copick-soup" in out.stdout


def test_simulate_then_score_truth_against_itself(tmp_path):
    out = tmp_path / "proj"
    result = invoke("simulate", "--out", out, "--runs", 2, "--shape", "48,96,96", "--crowding", 4, "--seed", 3)
    assert result.exit_code == 0, result.output
    assert "wrote 2 run(s)" in result.output
    config = out / "copick.json"
    result = invoke("score", "-c", config, "--candidate-user", "curation", "--candidate-session", "0", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    for name, c in scores["classes"].items():
        assert c["fp"] == 0 and c["fn"] == 0, name
        assert c["fbeta"] == (1.0 if c["tp"] else 0.0)
    table = invoke("score", "-c", config, "--candidate-user", "curation", "-r", "exp_001").output
    assert "weighted F4" in table and "ribosome" in table


def test_score_confusion_shows_particles_picked_as_another_class(project):
    from copick_soup.data import open_project, read_picks, write_picks

    root = open_project(project)
    for run in root.runs:  # every ribosome picked as thyroglobulin, nothing else picked
        truth = read_picks(run, ["ribosome"], "curation", "0", with_scores=True)
        write_picks(run, {"thyroglobulin": truth["ribosome"]}, "someone", "0")
    result = invoke("score", "-c", project, "--candidate-user", "someone", "--confusion", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["confusion"]["truth"]
    assert rows["ribosome"]["particles"] > 0
    assert rows["ribosome"]["picked_as"]["thyroglobulin"] == rows["ribosome"]["particles"]
    assert rows["ribosome"]["picked_as"]["ribosome"] == 0 and rows["ribosome"]["missed"] == 0
    assert all(row["missed"] == row["particles"] for name, row in rows.items() if name != "ribosome")
    table = invoke("score", "-c", project, "--candidate-user", "someone", "--confusion").output
    assert "weighted F4" in table and "truth / picked as" in table


def test_score_on_one_class(project):
    result = invoke("score", "-c", project, "--candidate-user", "curation", "--objects", "ribosome", "--json")
    assert list(json.loads(result.output)["classes"]) == ["ribosome"]


def test_portal_ground_truth_with_one_session_per_file_scores_as_if_it_were_one_session(project):
    """The portal stores its annotations as user data-portal, one session per file (here: per class)."""
    from copick_soup.data import open_project, read_picks, write_picks
    from copick_soup.objects import classes_from_root

    root = open_project(project)
    names = [c.name for c in classes_from_root(root)]
    for run in root.runs:
        truth = read_picks(run, names, "curation", "0", with_scores=True)
        for i, name in enumerate(names):
            write_picks(run, {name: truth[name]}, "data-portal", str(100 + i))
        picks = {n: (p[::2] + 30.0, s[::2]) for n, (p, s) in truth.items()}  # half the particles, 30 Å off
        write_picks(run, picks, "someone", "0")

    def scores(*reference):
        result = invoke("score", "-c", project, *reference, "--candidate-user", "someone", "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)

    one_session = scores("--reference-user", "curation", "--reference-session", "0")
    assert 0 < one_session["score"] < 1
    assert scores("--reference-user", "data-portal", "--reference-session", "*") == one_session
    assert scores("--reference-user", "data-portal/*") == one_session
    assert scores("--reference-user", "data-portal/10*") == one_session  # a glob over sessions
    only_first = scores("--reference-user", "data-portal/100")["classes"]
    assert only_first[names[0]]["fn"] == one_session["classes"][names[0]]["fn"]
    assert all(c["tp"] + c["fn"] == 0 for c in list(only_first.values())[1:])
    missing = one_line_error(invoke("score", "-c", project, "--reference-user", "data-portal",
                                    "--candidate-user", "someone"))
    assert "no ground truth by user 'data-portal' session '0'" in missing


def one_line_error(result):
    """The error is the last line, alone: no traceback, no usage text (progress lines may come before it)."""
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code != 0
    assert lines[-1].startswith("Error:"), result.output
    assert not any("Traceback" in line or line.startswith("Usage:") for line in lines), result.output
    return lines[-1]


def test_errors_are_one_line_and_name_what_is_wrong(project, tmp_path):
    assert "missing.json" in one_line_error(invoke("score", "-c", tmp_path / "missing.json", "--candidate-user", "x"))
    assert "TS_404" in one_line_error(invoke("score", "-c", project, "--candidate-user", "x", "--runs", "TS_404"))
    assert "ferritin" in one_line_error(invoke("score", "-c", project, "--candidate-user", "x", "--objects",
                                               "ferritin"))
    assert one_line_error(invoke("score", "-c", project, "--candidate-user", "curaton")) == (
        "Error: no picks by user 'curaton' in any session in this project; picks here are by (user/session) "
        "curation/0")  # a typo, which would otherwise score 0
    assert one_line_error(invoke("score", "-c", project, "--candidate-user", "curation", "--reference-session", "1",
                                 "-r", "exp_001")).startswith("Error: no ground truth by user 'curation' session '1' "
                                                              "in these runs;")
    bad_beta = invoke("score", "-c", project, "--candidate-user", "curation", "--beta", 0)
    assert bad_beta.exit_code != 0 and "Invalid value for '--beta'" in bad_beta.output
    assert "already exists" in one_line_error(invoke("simulate", "--out", project.parent))
    bad_shape = invoke("simulate", "--out", tmp_path / "new", "--shape", "64,128")
    assert bad_shape.exit_code != 0 and "--shape" in bad_shape.output
    for types, got in (("denoised,isonetcorrected", "isonetcorrected"), ("", "none")):
        assert one_line_error(invoke("simulate", "--out", tmp_path / "typed", "--tomo-types", types)) == (
            f"Error: --tomo-types: the simulator writes wbp, denoised, ctfdeconvolved; got {got}")
        assert not (tmp_path / "typed").exists()  # refused before anything is written


def test_demo_prints_scores_and_writes_a_picture(tmp_path):
    result = invoke("demo", "--out", tmp_path / "demo", "--runs", 1, "--shape", "48,96,96")
    assert result.exit_code == 0, result.output
    assert "weighted F4" in result.output
    picture = tmp_path / "demo" / "picks.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "demo" / "qc" / "exp_000.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    again = invoke("demo", "--out", tmp_path / "demo", "--runs", 1, "--shape", "48,96,96")
    assert again.exit_code == 0 and again.output.splitlines()[-3:] == result.output.splitlines()[-3:]


def test_output_that_cannot_be_written_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "file/demo" in one_line_error(invoke("demo", "--out", blocker / "demo", "--runs", 1, "--shape", "32,64,64"))
    assert "file/sim" in one_line_error(invoke("simulate", "--out", blocker / "sim"))


def test_picture_that_cannot_be_written_is_a_clear_error(tmp_path):
    import numpy as np

    from copick_soup.errors import SoupError
    from copick_soup.viz import save_slices_png

    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(SoupError, match="picks.png: cannot write the picture"):
        save_slices_png(np.zeros((8, 16, 16)), blocker / "picks.png", 10.0, [])


def test_run_names_repeat_as_copick_has_them_and_runs_still_works_with_a_warning(project):
    score = ("score", "-c", project, "--candidate-user", "curation", "--json")
    repeated = invoke(*score, "-r", "exp_000", "-r", "exp_001")
    assert repeated.exit_code == 0, repeated.output
    legacy = invoke(*score, "--runs", "exp_000,exp_001")
    assert legacy.exit_code == 0, legacy.output
    assert "--runs is deprecated; use --run-names/-r (repeatable) instead." in legacy.output
    first, second = (json.loads(r.output[r.output.index("{"):]) for r in (repeated, legacy))
    assert first == second


def test_debug_shows_the_traceback_behind_a_one_line_error(project):
    quiet = invoke("score", "-c", project, "--candidate-user", "nobody")
    loud = invoke("score", "-c", project, "--candidate-user", "nobody", "--debug")
    assert quiet.exit_code == loud.exit_code == 1
    assert "Traceback" not in quiet.output and "Traceback" in loud.output
    assert quiet.output.strip().splitlines()[-1] == loud.output.strip().splitlines()[-1]
