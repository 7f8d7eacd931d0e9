"""Which numeric precision a run uses when none is given: the fastest this device runs well.

* CUDA: ``bf16-mixed`` where the GPU has bf16 (Ampere and newer), else ``16-mixed`` (fp16
  autocast with dynamic loss scaling, fp32 master weights: V100, T4, RTX 20xx).
* CPU: measured, not assumed. bf16 is native only with AVX512-BF16 / AMX (x86) or Arm's BF16
  extension; elsewhere PyTorch emulates it, 10-40x slower than fp32. A short probe times the
  model's own matmul shapes in fp32 and bf16 and picks ``bf16-mixed`` only where bf16 is clearly
  faster; autocast's casts and the fp32 normalisations must be paid for too.
* MPS: ``bf16-mixed``, as before.

An explicit ``--precision`` is always obeyed; on a CPU it is checked against the same probe
and a one-line warning says when the other choice would be much faster here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from pajama import PajamaError
from pajama.hardware import cpu_info, emulated_isa
from pajama.memory import PRECISIONS
from pajama.model_config import ModelConfig
# bf16 matmuls must beat fp32 by this much before bf16-mixed wins a whole training step:
# autocast casts activations per layer and RMSNorm, rotary and the loss stay in fp32.
BF16_MARGIN = 1.25
# An explicit choice this many times slower than the other gets a warning.
WARN_RATIO = 1.5
# A bf16 matmul this much slower than fp32 on a small square is emulated: no need to time more.
EMULATED_RATIO = 0.5
PROBE_ROWS = 512  # rows of the probe's activations (tokens); enough to fill a CPU's cores
PROBE_DIM_CAP = 1024  # larger model dimensions are timed at this size: the rate has converged


@dataclass(frozen=True)
class MatmulRates:
    """Measured matmul throughput on this CPU, FLOP/s, over the model's shapes."""

    fp32: float
    bf16: float

    @property
    def bf16_speedup(self) -> float:
        return self.bf16 / self.fp32


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    reason: str  # one line: what was chosen and why
    warning: str | None = None  # set when an explicit choice is much slower here


def choose_precision(requested: str | None, device_type: str, model: ModelConfig, tokens: int, backward: bool = True) -> PrecisionChoice:
    """The precision of a run on ``device_type`` (cpu, cuda, mps) for ``model`` with ``tokens``
    tokens per micro-batch, training (``backward``) or only running the model forward;
    ``requested`` (the --precision flag) wins when given."""
    if requested is not None and requested not in PRECISIONS:
        raise PajamaError(f"--precision must be {', '.join(PRECISIONS)}, got {requested!r}")
    if device_type == "cuda":
        return cuda_choice(requested, torch.cuda.get_device_name(), torch.cuda.get_device_capability(), bool(torch.version.hip))
    if device_type != "cpu":
        chosen = requested or "bf16-mixed"
        return PrecisionChoice(chosen, f"precision {chosen}" + (" (--precision)" if requested else f" on {device_type}"))
    rates = probe_cpu(model, tokens, backward)
    return cpu_choice(requested, rates, cpu_info().describe() + (f", {emulated_isa()}" if emulated_isa() else ""))


def cuda_choice(requested: str | None, name: str, capability: tuple[int, int], hip: bool) -> PrecisionChoice:
    """The CUDA decision from the GPU's compute ``capability``: bf16 only where its tensor cores
    have it (8.0, Ampere, and newer; every ROCm GPU PyTorch runs on). Not from
    ``torch.cuda.is_bf16_supported()``, which by default also counts bf16 that PyTorch emulates
    (V100, T4, RTX 20xx: far slower than fp16 there)."""
    native = hip or capability >= (8, 0)
    has = f"{name} (compute capability {capability[0]}.{capability[1]})"
    if requested is not None:
        if requested.startswith("bf16") and not native:
            raise PajamaError(f"--precision {requested}: {has} has no bf16 in hardware (it needs 8.0, Ampere, or newer; PyTorch would emulate it, far slower); use 16-mixed (or 32-true)")
        return PrecisionChoice(requested, f"precision {requested} (--precision)")
    if native:
        return PrecisionChoice("bf16-mixed", f"precision bf16-mixed: {has} has bf16")
    return PrecisionChoice("16-mixed", f"precision 16-mixed (fp16 with loss scaling): {has} has no bf16 in hardware")


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype the matmuls run in under ``precision`` (autocast's in mixed precision; the
    weights' own for inference, which needs no fp32 master copy)."""
    return {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16, "16-mixed": torch.float16}.get(precision, torch.float32)


def cpu_choice(requested: str | None, rates: MatmulRates, cpu: str) -> PrecisionChoice:
    """The CPU decision from measured rates: bf16-mixed where bf16 matmuls are clearly faster,
    else 32-true; an explicit ``requested`` is kept, with a warning when much slower."""
    speed = f"bf16 matmuls {rates.bf16 / 1e9:,.0f} vs fp32 {rates.fp32 / 1e9:,.0f} GFLOP/s on this CPU ({cpu})"
    fast_bf16 = rates.bf16_speedup >= BF16_MARGIN
    if requested is None:
        chosen = "bf16-mixed" if fast_bf16 else "32-true"
        return PrecisionChoice(chosen, f"precision {chosen}: {speed}")
    warning = None
    if requested.startswith(("bf16", "16-")) and rates.bf16_speedup * WARN_RATIO <= 1:
        warning = f"--precision {requested} is slow here: {speed}; 32-true would be about {1 / rates.bf16_speedup:.0f}x faster"
    elif requested == "32-true" and rates.bf16_speedup >= WARN_RATIO * BF16_MARGIN:
        warning = f"--precision 32-true is slow here: {speed}; bf16-mixed would be faster"
    return PrecisionChoice(requested, f"precision {requested} (--precision): {speed}", warning)


def probe_cpu(model: ModelConfig, tokens: int, backward: bool = True, seconds_per_product: float = 0.01) -> MatmulRates:
    """Time the model's linear layers (attention, MLP, output head) on ``tokens`` rows, in fp32
    and bf16, forward and (``backward``) both gradient products, on as many threads as training
    will use. Under a second even where bf16 is emulated."""
    rows = max(1, min(tokens, PROBE_ROWS))
    d, h, v = (min(x, PROBE_DIM_CAP) for x in (model.n_embd, model.intermediate_size, model.vocab_size))
    # A small square first: an emulated bf16 shows at once, and the large shapes need not be run.
    fp32, bf16 = (_rate([(256, 512, 512)], dtype, backward, seconds_per_product) for dtype in (torch.float32, torch.bfloat16))
    if bf16 < EMULATED_RATIO * fp32:
        return MatmulRates(fp32, bf16)
    shapes = [(rows, d, d), (rows, d, h), (rows, h, d), (rows, d, v)]
    return MatmulRates(*(_rate(shapes, dtype, backward, seconds_per_product) for dtype in (torch.float32, torch.bfloat16)))


def _rate(shapes: list[tuple[int, int, int]], dtype: torch.dtype, backward: bool, seconds_per_product: float) -> float:
    """FLOP/s over the products of linear layers of ``shapes`` (m rows, k in, n out), weighted
    as a step weighs them (by FLOPs). Each product counts its fastest repetition: another
    process on the machine only slows some."""
    flops = elapsed = 0.0
    generator = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(m, k, generator=generator).to(dtype)
        weight = torch.randn(n, k, generator=generator).to(dtype)  # nn.Linear's layout
        grad = torch.randn(m, n, generator=generator).to(dtype)
        # Each layout has its own kernel, and CPUs without native bf16 can be fast at one and
        # 20x slower at another (the input gradient, seen on AVX2), so time all three.
        products = [lambda: F.linear(x, weight)] + ([lambda: grad @ weight, lambda: grad.t() @ x] if backward else [])
        for product in products:
            for _ in range(2):  # warm-up: kernel selection and JIT, caches
                product()
            best, start = float("inf"), time.perf_counter()
            while best == float("inf") or time.perf_counter() - start < seconds_per_product:
                t = time.perf_counter()
                product()
                best = min(best, time.perf_counter() - t)
            elapsed += best
            flops += 2 * m * k * n
    return flops / elapsed
