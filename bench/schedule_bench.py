"""Learning rate schedules on a CPU, at the same token budget: WSD against cosine, a cool-down from
the middle of a WSD run against a cosine run that ends where the cool-down does, and a two-stage
run stopped before its stage boundary and resumed, against the same run straight.

Run by hand: ``python bench/schedule_bench.py [--model_name small --steps 64]`` (about 3 minutes
on 2 cores). The ``small`` preset on the bundled sample (a 4096-token tokenizer trained here),
sequences of 64 tokens, 8 a step, fp32, learning rate 3e-3 to 3e-4, warm-up a tenth of the run;
WSD decays (1-sqrt) over its last fifth. Validation loss on the same held-out sequences at the
end of each run. The two-stage run switches from LLaMA's mixture to GitHub alone half-way; its
losses must be bit-identical.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import tempfile
import time
from pathlib import Path

from pajama.prepare import prepare
from pajama.quickstart import SAMPLE
from pajama.tokenizer import train_tokenizer
from pajama.training import TrainConfig, pretrain

BLOCK, BATCH = 64, 8


def run(out_dir: Path, data: Path, model_name: str, **settings) -> dict[int, dict[str, str]]:
    """One quiet ``pretrain``: its metrics.csv rows by step."""
    config = TrainConfig(
        train_data_dir=data, model_name=model_name, out_dir=out_dir, block_size=BLOCK, batch_size=BATCH, micro_batch_size=BATCH,
        learning_rate=3e-3, min_lr=3e-4, eval_iters=4, accelerator="cpu", precision="32-true", log_interval=1, **settings,
    )  # fmt: skip
    print(f"  run {out_dir.name} ...", flush=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        pretrain(config)
    with open(out_dir / "metrics.csv", newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def final_val(rows: dict[int, dict[str, str]]) -> float:
    return float(rows[max(rows)]["val_loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_name", default="small")
    parser.add_argument("--steps", type=int, default=64, help="steps of the full-length runs")
    args = parser.parse_args()
    n, tokens_per_step = args.steps, BLOCK * BATCH
    warmup = max(1, n // 10)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            train_tokenizer(SAMPLE, root / "tok", vocab_size=4096, sample=True)
            prepare(SAMPLE, root / "tok" / "tokenizer.model", root / "data", sample=True, chunk_size=257 * 1024, num_workers=1)
        data = root / "data"
        print(f"{args.model_name}, {n} steps of {tokens_per_step:,} tokens ({n * tokens_per_step:,}), warm-up {warmup} steps")
        started = time.perf_counter()
        every = dict(eval_interval=n, save_interval=n // 2, warmup_iters=warmup)
        cosine = run(root / "cosine", data, args.model_name, max_iters=n, **every)
        wsd = run(root / "wsd", data, args.model_name, max_iters=n, lr_schedule="wsd", decay_fraction=0.2, **every)
        print(f"full length, {n} steps: cosine val {final_val(cosine):.4f}, wsd val {final_val(wsd):.4f}")
        # A cool-down from the middle of the WSD run over a quarter of the run, against a cosine run of that length.
        end = n // 2 + n // 4
        cool = run(root / "cool", data, args.model_name, lr_schedule="wsd", decay_from=root / "wsd" / "checkpoints" / f"step-{n // 2:08d}",
                   decay_tokens=(n // 4) * tokens_per_step, eval_interval=n, save_interval=n)  # fmt: skip
        short = run(root / "short", data, args.model_name, max_iters=end, eval_interval=end, save_interval=end, warmup_iters=warmup)
        print(f"to step {end}: wsd cooled down from step {n // 2} val {final_val(cool):.4f}, cosine ending there val {final_val(short):.4f}")
        # Two stages (LLaMA's mixture, then GitHub alone from the middle), straight and stopped before the boundary then resumed.
        stages = dict(stages=[{"start_tokens": (n // 4) * tokens_per_step, "mixture": {"github": 1.0}}], lr_schedule="constant",
                      warmup_iters=warmup, eval_interval=n, save_interval=n // 8)  # fmt: skip
        straight = run(root / "straight", data, args.model_name, max_iters=n // 2, **stages)
        run(root / "resumed", data, args.model_name, max_iters=n // 8, **stages)
        resumed = run(root / "resumed", data, args.model_name, max_iters=n // 2, **stages)
        same = all(straight[s]["loss"] == resumed[s]["loss"] for s in straight if straight[s]["loss"])
        print(f"two stages, boundary at step {n // 4}, stopped at step {n // 8} and resumed: losses of all {n // 2} steps "
              f"{'bit-identical' if same else 'DIFFER'} to the straight run (final loss {straight[n // 2]['loss'][:8]})")  # fmt: skip
        print(f"{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
