"""The precision a run uses: chosen from measured speeds on CPUs (and under an emulated older
CPU), fp16 with dynamic loss scaling where bf16 is missing, and the micro-batch that fits."""

import os
import subprocess
import sys

import pytest

from pajama import PajamaError
from pajama.hardware import cpu_info
from pajama.model_config import preset
from pajama.precision import MatmulRates, choose_precision, cpu_choice, cuda_choice

CPU = "test CPU"


def test_cpu_choice_follows_the_measured_speeds():
    native = MatmulRates(fp32=100e9, bf16=350e9)
    emulated = MatmulRates(fp32=100e9, bf16=3e9)
    close = MatmulRates(fp32=100e9, bf16=110e9)  # bf16 barely faster: autocast's overhead eats it
    assert cpu_choice(None, native, CPU).precision == "bf16-mixed"
    assert cpu_choice(None, emulated, CPU).precision == "32-true"
    assert cpu_choice(None, close, CPU).precision == "32-true"
    assert "bf16 matmuls 350 vs fp32 100 GFLOP/s" in cpu_choice(None, native, CPU).reason


def test_an_explicit_precision_is_obeyed_with_a_warning_when_much_slower():
    emulated = MatmulRates(fp32=100e9, bf16=3e9)
    native = MatmulRates(fp32=100e9, bf16=350e9)
    slow_bf16 = cpu_choice("bf16-mixed", emulated, CPU)
    assert slow_bf16.precision == "bf16-mixed" and "32-true would be about 33x faster" in slow_bf16.warning
    slow_fp32 = cpu_choice("32-true", native, CPU)
    assert slow_fp32.precision == "32-true" and "bf16-mixed would be faster" in slow_fp32.warning
    assert cpu_choice("32-true", emulated, CPU).warning is None
    assert cpu_choice("bf16-mixed", native, CPU).warning is None


def test_cuda_bf16_comes_from_the_compute_capability_not_emulation():
    # V100 (7.0), T4 and RTX 20xx (7.5): PyTorch emulates bf16 there, so fp16 with loss scaling.
    for capability in ((7, 0), (7, 5)):
        choice = cuda_choice(None, "Tesla T4", capability, hip=False)
        assert choice.precision == "16-mixed" and f"{capability[0]}.{capability[1]}" in choice.reason
        with pytest.raises(PajamaError, match="--precision bf16-mixed: Tesla T4 .* has no bf16 in hardware"):
            cuda_choice("bf16-mixed", "Tesla T4", capability, hip=False)
        assert cuda_choice("16-mixed", "Tesla T4", capability, hip=False).precision == "16-mixed"
    for capability in ((8, 0), (8, 6), (9, 0), (10, 0)):
        assert cuda_choice(None, "A100", capability, hip=False).precision == "bf16-mixed"
        assert cuda_choice("bf16-true", "A100", capability, hip=False).precision == "bf16-true"
    assert cuda_choice(None, "MI250X", (9, 0), hip=True).precision == "bf16-mixed"


def _choose_in_a_fresh_process(env_extra: dict) -> str:
    code = "from pajama.precision import choose_precision; from pajama.model_config import preset; print(choose_precision(None, 'cpu', preset('small').replace(vocab_size=4096), 4096).precision)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env_extra}, check=True)
    return result.stdout.strip()


def test_a_cpu_without_native_bf16_gets_fp32():
    # Capping the instruction set makes this CPU compute bf16 the way AVX2-only CPUs do: emulated.
    assert _choose_in_a_fresh_process({"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}) == "32-true"


def test_this_cpu_gets_what_its_features_promise():
    expected = "bf16-mixed" if cpu_info().native_bf16 else "32-true"
    assert _choose_in_a_fresh_process({}) == expected


def test_probe_is_quick_and_says_why():
    import time

    started = time.perf_counter()
    choice = choose_precision(None, "cpu", preset("7B"), 2048)
    assert time.perf_counter() - started < 5
    assert choice.reason.startswith(f"precision {choice.precision}: bf16 matmuls") and cpu_info().model in choice.reason
