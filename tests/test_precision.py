"""bf16 by default only where the CPU computes it natively and faster than float32 (AMX; AVX512-BF16 on AMD): the
CPU's flags and vendor decide (oneDNN's own query also says yes where bf16 is only emulated, 1.8x slower than
float32; with AVX512-BF16 but no AMX an Intel ran it no faster, an AMD Zen 4 twice as fast), and `pick` prints which
precision it runs in and why. The CPU is faked with a /proc/cpuinfo-style file ($COPICK_SOUP_CPUINFO), every way."""

import pytest
import torch

# The flags of three real CPUs, cut to what matters here (and a few neighbours, so that a substring match fails).
ICE_LAKE = "fpu sse2 avx2 avx512f avx512bw avx512vl avx512_vnni avx512_vbmi2"  # AVX-512, bf16 emulated
COOPER_LAKE = ICE_LAKE + " avx512_bf16"
SAPPHIRE_RAPIDS = COOPER_LAKE + " amx_bf16 amx_tile amx_int8 avx512_fp16"
ZEN4 = ICE_LAKE + " avx512_bf16 avx512_vpopcntdq"  # AMD EPYC 9004 / Ryzen 7000: the same bf16 flag as Cooper Lake
GRAVITON3 = "fp asimd evtstrm aes sve asimdbf16 bf16 i8mm"  # Arm: 'Features', BF16 extension


def cpuinfo(tmp_path, flags: str, key: str = "flags", vendor: str | None = "GenuineIntel"):
    path = tmp_path / f"cpuinfo-{abs(hash((flags, vendor)))}"
    head = f"vendor_id\t: {vendor}\n" if vendor else ""  # Arm's /proc/cpuinfo has none
    path.write_text(f"processor\t: 0\n{head}model name\t: a CPU\n{key}\t\t: {flags}\n\n"
                    f"processor\t: 1\n{head}{key}\t\t: {flags}\n")
    return str(path)


@pytest.mark.parametrize("flags, key, vendor, choice", [
    (ICE_LAKE, "flags", "GenuineIntel", "float32 (this CPU has no native bf16 (no amx_bf16 or avx512_bf16 flag; "
                                        "--amp bf16 would emulate it))"),
    (COOPER_LAKE, "flags", "GenuineIntel", "float32 (avx512_bf16 without AMX: bf16 ran no faster than float32 on "
                                           "such a CPU; --amp bf16 to use it)"),
    (SAPPHIRE_RAPIDS, "flags", "GenuineIntel", "bfloat16 (native on this CPU: amx_bf16)"),
    (ZEN4, "flags", "AuthenticAMD", "bfloat16 (native on this CPU: avx512_bf16 on AMD, 2x float32's speed there)"),
    (ICE_LAKE, "flags", "AuthenticAMD", "float32 (this CPU has no native bf16 (no amx_bf16 or avx512_bf16 flag; "
                                        "--amp bf16 would emulate it))"),  # Zen 3 and older: no bf16 flag
    (GRAVITON3, "Features", None, "float32 (Arm's bf16 is not measured here; --amp bf16 to use it)"),
])
def test_bf16_by_default_only_where_measured_faster(tmp_path, monkeypatch, flags, key, vendor, choice):
    from copick_soup.device import amp_dtype, cpu_bf16, precision_choice

    monkeypatch.setenv("COPICK_SOUP_CPUINFO", cpuinfo(tmp_path, flags, key, vendor))
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
    for flags, vendor, hint in ((ICE_LAKE, "GenuineIntel", "f32"), (COOPER_LAKE, "GenuineIntel", "f32"),
                                (SAPPHIRE_RAPIDS, "GenuineIntel", "bf16"), (ZEN4, "AuthenticAMD", "bf16")):
        monkeypatch.setenv("COPICK_SOUP_CPUINFO", cpuinfo(tmp_path, flags, vendor=vendor))
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
