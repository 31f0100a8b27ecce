"""bf16 by default only where the CPU computes it natively and faster than float32 (AMX): the CPU's flags decide
(oneDNN's own query also says yes where bf16 is only emulated, 1.8x slower than float32; with AVX512-BF16 but no AMX
it ran no faster), and `pick` prints which precision it runs in and why. The CPU is faked with a /proc/cpuinfo-style
file ($COPICK_SOUP_CPUINFO), every way."""

import pytest
import torch

# The flags of three real CPUs, cut to what matters here (and a few neighbours, so that a substring match fails).
ICE_LAKE = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni avx512_vbmi2"  # AVX-512, bf16 emulated
COOPER_LAKE = ICE_LAKE + " avx512_bf16"
SAPPHIRE_RAPIDS = COOPER_LAKE + " amx_bf16 amx_tile amx_int8 avx512_fp16"
GRAVITON3 = "fp asimd evtstrm aes sve asimdbf16 bf16 i8mm"  # Arm: 'Features', BF16 extension


def cpuinfo(tmp_path, flags: str, key: str = "flags"):
    path = tmp_path / f"cpuinfo-{abs(hash(flags))}"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\n{key}\t\t: {flags}\n\nprocessor\t: 1\n{key}\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize("flags, key, choice", [
    (ICE_LAKE, "flags", "float32 (this CPU has no native bf16 (no amx_bf16 or avx512_bf16 flag; --amp bf16 would "
                        "emulate it))"),
    (COOPER_LAKE, "flags", "float32 (avx512_bf16 without AMX: bf16 ran no faster than float32 on such a CPU; --amp "
                           "bf16 to use it)"),
    (SAPPHIRE_RAPIDS, "flags", "bfloat16 (native on this CPU: amx_bf16)"),
    (GRAVITON3, "Features", "float32 (Arm's bf16 is not measured here; --amp bf16 to use it)"),
])
def test_bf16_by_default_only_with_amx(tmp_path, monkeypatch, flags, key, choice):
    from copick_soup.device import amp_dtype, cpu_bf16, precision_choice

    monkeypatch.setenv("COPICK_SOUP_CPUINFO", cpuinfo(tmp_path, flags, key))
    bf16 = choice.startswith("bfloat16")
    assert cpu_bf16()[0] == bf16
    assert amp_dtype("auto", "cpu") == (torch.bfloat16 if bf16 else None)
    assert precision_choice("auto", "cpu") == choice
    # what the user asks for is what runs, and the reason says it was asked for
    assert amp_dtype("bf16", "cpu") == torch.bfloat16 and precision_choice("bf16", "cpu") == "bfloat16 (--amp bf16)"
    assert amp_dtype("none", "cpu") is None and precision_choice("none", "cpu") == "float32 (--amp none)"


def test_a_cpu_whose_flags_are_unknown_runs_float32_and_says_why(tmp_path, monkeypatch):
    from copick_soup.device import amp_dtype, precision_choice

    missing = tmp_path / "no-such-cpuinfo"
    monkeypatch.setenv("COPICK_SOUP_CPUINFO", str(missing))
    assert amp_dtype("auto", "cpu") is None
    assert precision_choice("auto", "cpu") == f"float32 (not assumed native: {missing} lists no CPU flags)"


def test_openvino_is_asked_for_the_precision_the_flags_allow(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    from copick_soup.ensemble import InferenceSettings
    from copick_soup.ensemble.runtimes import OpenVinoPredictor
    from copick_soup.model import create_model

    model = create_model("unet3d_test", n_classes=2).eval()
    for flags, hint in ((ICE_LAKE, "f32"), (COOPER_LAKE, "f32"), (SAPPHIRE_RAPIDS, "bf16")):
        monkeypatch.setenv("COPICK_SOUP_CPUINFO", cpuinfo(tmp_path, flags))
        settings = InferenceSettings(device="cpu", runtime="openvino").resolved()
        assert OpenVinoPredictor(model, settings.amp_dtype).precision == hint


def test_pick_prints_the_precision_and_why(tmp_path, monkeypatch, project, test_soup):
    from click.testing import CliRunner

    from copick_soup.cli import main

    for flags, expected in ((ICE_LAKE, "precision: float32 (this CPU has no native bf16"),
                            (SAPPHIRE_RAPIDS, "precision: bfloat16 (native on this CPU: amx_bf16)")):
        monkeypatch.setenv("COPICK_SOUP_CPUINFO", cpuinfo(tmp_path, flags))
        out = CliRunner().invoke(main, ["pick", "-c", str(project), "--soup", test_soup, "-r", "exp_000",
                                        "--user-id", f"u{abs(hash(flags))}"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        assert expected in out.output, out.output
