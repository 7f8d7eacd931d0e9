"""The precision a run uses: chosen from measured speeds on CPUs (and under an emulated older
CPU), fp16 with dynamic loss scaling where bf16 is missing, and the micro-batch that fits."""

import os
import subprocess
import sys

from pajama import memory
from pajama.hardware import cpu_info
from pajama.model_config import preset
from pajama.precision import MatmulRates, choose_precision, cpu_choice

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


def test_fit_batch_keeps_the_global_batch_when_it_divides():
    assert memory.fit_batch(16, 1, 16) == (16, 16, None)
    assert memory.fit_batch(16, 1, 11) == (8, 16, None)  # accumulation 2
    assert memory.fit_batch(120, 4, 7) == (6, 120, None)  # 30 per device: 6 x 5
    assert memory.fit_batch(16, 1, 100) == (16, 16, None)  # never more than the batch itself


def test_fit_batch_moves_a_global_batch_that_does_not_divide():
    micro, batch, note = memory.fit_batch(31, 1, 16)  # prime: only micro-batches of 1 would divide it
    assert (micro, batch) == (16, 32) and note == "global batch 31 -> 32 sequences, so that micro-batches of 16 on 1 device(s) divide it"
    micro, batch, note = memory.fit_batch(125, 4, 8)  # does not split over 4 devices
    assert (micro, batch) == (8, 128) and "125 -> 128" in note


def test_largest_micro_batch_follows_the_memory_plan():
    config = preset("small").replace(vocab_size=4096, block_size=256)
    one = memory.estimate(config, 1, 1, 256, "single", False, "32-true")["total"]
    four = memory.estimate(config, 1, 4, 256, "single", False, "32-true")["total"]
    assert memory.largest_micro_batch(config, four, 64, 1, 256, "single", False, "32-true") == 4
    assert memory.largest_micro_batch(config, (one + four) / 2, 64, 1, 256, "single", False, "32-true") in (1, 2, 3)
    assert memory.largest_micro_batch(config, one / 2, 64, 1, 256, "single", False, "32-true") == 0
    # fp32 activations take more room than mixed precision's
    assert memory.estimate(config, 1, 8, 256, "single", False, "32-true")["activations"] > memory.estimate(config, 1, 8, 256, "single", False, "bf16-mixed")["activations"]


def test_largest_that_fits_backs_off_until_a_try_succeeds():
    tried = []

    def fits(micro):  # what a GPU with room for 5 sequences answers
        tried.append(micro)
        return micro <= 5

    assert memory.largest_that_fits([32, 16, 8, 4, 2, 1], fits) == 4
    assert tried == [32, 16, 8, 4]
    assert memory.largest_that_fits([8, 4], lambda m: False) == 0
