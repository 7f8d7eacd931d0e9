"""``pajama quickstart``: the whole pipeline on the bundled sample, sized to take a few minutes
on whatever CPU runs it."""

from __future__ import annotations

import math
import time
from pathlib import Path

from pajama.hardware import device_type
from pajama.loader import load_prepared
from pajama.model_config import ModelConfig, preset
from pajama.prepare import prepare
from pajama.tokenizer import train_tokenizer

SAMPLE = Path(__file__).parent / "sample"
BLOCK_SIZE = 256
# 8 sequences a step: at a fixed budget of tokens, more (smaller) steps reach a lower loss here
# (300 x 8 sequences: validation loss 4.93; 150 x 16: 5.18).
BATCH_SIZE = 8
EVALS = 6  # validations during the run (plus one at step 0)
EVAL_ITERS = 8  # micro-batches per validation
# Fewer steps than this and the samples are not yet words; more than the most add little.
MIN_ITERS, MAX_ITERS = 250, 1000


def plan_iters(step_seconds: float, minutes: float) -> int:
    """Optimizer steps that fit ``minutes`` of training at ``step_seconds`` a step, counting the
    validations (forward passes only, about a third of a step's work each), within
    [MIN_ITERS, MAX_ITERS]."""
    eval_steps = (EVALS + 1) * EVAL_ITERS / 3
    fit = math.floor(minutes * 60 / step_seconds - eval_steps)
    return max(MIN_ITERS, min(MAX_ITERS, fit))


def time_steps(config: ModelConfig, precision: str, accelerator: str, steps: int = 3) -> float:
    """Seconds per optimizer step of the quick start's training on this machine: a few real
    steps (forward, backward, AdamW) of its model, batch and precision, on random tokens."""
    import torch
    import torch.nn.functional as F

    from pajama.model import LLaMA
    from pajama.precision import compute_dtype

    device = torch.device(device_type(accelerator))
    model = LLaMA(config).to(device)
    model.init_weights(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    tokens = torch.randint(0, config.vocab_size, (BATCH_SIZE, BLOCK_SIZE + 1), generator=torch.Generator().manual_seed(0)).to(device)
    dtype = compute_dtype(precision)
    times = []
    for _ in range(steps + 1):  # the first warms up kernels and allocators
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits = model(tokens[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), tokens[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times[1:])


def quickstart(
    out_dir: Path = Path("out/quickstart"),
    model_name: str = "small",
    minutes: float = 6.0,
    max_iters: int | None = None,
    accelerator: str = "cpu",
    precision: str | None = None,
) -> None:
    """Run the whole pipeline on the bundled sample: train a tokenizer, prepare, pre-train, sample.

    The bundled sample is a few MB of real text laid out like RedPajama-Data-1T-Sample. The
    training is sized to this machine: a few steps are timed first, and as many steps as fit
    the time budget are run (250 to 1000). Rerunning resumes where it stopped.

    Args:
        out_dir: everything goes here (tokenizer/, data/, run/).
        model_name: model preset to pre-train.
        minutes: time budget of the training part, from which the number of steps follows.
        max_iters: optimizer steps; given, no time budget applies.
        accelerator: cpu, cuda, mps or auto (one device).
        precision: training precision (default: the fastest on this machine, measured).
    """
    # torch: only once the command runs, so that its --help starts as fast as the others'
    from pajama import checkpoint
    from pajama.generate import generate
    from pajama.precision import choose_precision
    from pajama.training import TrainConfig, pretrain

    device = device_type(accelerator)  # an accelerator that is not there is refused before any work
    out_dir = Path(out_dir).expanduser().resolve()
    started = time.time()
    print(f"== 1/4 tokenizer: SentencePiece BPE on {SAMPLE}")
    tokenizer_dir = out_dir / "tokenizer"
    tokenizer_path = tokenizer_dir / "tokenizer.model"
    if not tokenizer_path.exists():
        train_tokenizer(SAMPLE, tokenizer_dir, vocab_size=4096, sample=True)
    print("== 2/4 prepare: tokenize into packed chunk files")
    data_dir = out_dir / "data"
    prepare(SAMPLE, tokenizer_path, data_dir, sample=True, chunk_size=257 * 1024)
    print("== 3/4 pretrain")
    run_dir = out_dir / "run"
    earlier = checkpoint.list_checkpoints(run_dir)
    if earlier and max_iters is None:  # resuming: the run's own length (and precision), so that it continues exactly
        max_iters = checkpoint.read_meta(earlier[-1])["train"]["max_iters"]
    if max_iters is None:
        config = preset(model_name).replace(vocab_size=load_prepared(data_dir).vocab_size, block_size=BLOCK_SIZE)
        choice = choose_precision(precision, device, config, tokens=BATCH_SIZE * BLOCK_SIZE)
        print(choice.reason)
        precision = choice.precision
        step_seconds = time_steps(config, precision, accelerator)
        max_iters = plan_iters(step_seconds, minutes)
        expected = (max_iters + (EVALS + 1) * EVAL_ITERS / 3) * step_seconds / 60
        print(f"measured {step_seconds:.2f} s per step of {BATCH_SIZE} x {BLOCK_SIZE} tokens: training {max_iters} steps, about {expected:.1f} min "
              f"(quick start done in about {(time.time() - started) / 60 + expected + 0.3:.0f} min)")  # fmt: skip
    pretrain(
        TrainConfig(
            train_data_dir=data_dir,
            model_name=model_name,
            out_dir=run_dir,
            accelerator=accelerator,
            precision=precision,
            block_size=BLOCK_SIZE,
            batch_size=BATCH_SIZE,
            micro_batch_size=BATCH_SIZE,
            learning_rate=1e-3,
            min_lr=1e-4,
            warmup_iters=max(1, max_iters // 12),
            max_iters=max_iters,
            eval_interval=max(1, max_iters // EVALS),
            save_interval=max(1, max_iters // 3),
            eval_iters=EVAL_ITERS,
            log_interval=max(1, max_iters // 60),
        )
    )
    print("== 4/4 generate")
    generate(run_dir, tokenizer_path, prompt="The ", max_new_tokens=100, temperature=0.8, top_k=50, accelerator=accelerator)
    print(
        f"\nquickstart done in {(time.time() - started) / 60:.1f} min\n"
        f"  tokenizer    {tokenizer_path}\n"
        f"  data         {data_dir} (manifest.json)\n"
        f"  checkpoints  {run_dir / 'checkpoints'}\n"
        f"  metrics      {run_dir / 'metrics.csv'}\n"
        f"sample again:  pajama generate --checkpoint {run_dir} --prompt 'Python is'"
    )
