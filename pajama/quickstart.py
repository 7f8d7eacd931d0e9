"""``pajama quickstart``: the whole pipeline on the bundled sample, in about ten minutes on a laptop CPU."""

from __future__ import annotations

import time
from pathlib import Path

from pajama.generate import generate
from pajama.prepare import prepare
from pajama.tokenizer import train_tokenizer
from pajama.train import TrainConfig, pretrain

SAMPLE = Path(__file__).parent / "sample"


def quickstart(
    out_dir: Path = Path("out/quickstart"),
    model_name: str = "small",
    max_iters: int = 600,
    accelerator: str = "cpu",
) -> None:
    """Run the whole pipeline on the bundled sample: train a tokenizer, prepare, pre-train, sample.

    The bundled sample is a few MB of real text laid out like RedPajama-Data-1T-Sample.
    Rerunning resumes where it stopped.

    Args:
        out_dir: everything goes here (tokenizer/, data/, run/).
        model_name: model preset to pre-train.
        max_iters: optimizer steps (600 take about 5 minutes on 2 CPU cores with the small preset).
        accelerator: cpu, cuda or auto (one device).
    """
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
    batch_size = 16
    pretrain(
        TrainConfig(
            train_data_dir=data_dir,
            model_name=model_name,
            out_dir=run_dir,
            accelerator=accelerator,
            block_size=256,
            batch_size=batch_size,
            micro_batch_size=batch_size,
            learning_rate=1e-3,
            min_lr=1e-4,
            warmup_iters=max(1, max_iters // 12),
            max_iters=max_iters,
            eval_interval=max(1, max_iters // 6),
            save_interval=max(1, max_iters // 3),
            eval_iters=8,
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
        f"sample again:  pajama generate --checkpoint {run_dir} --tokenizer_path {tokenizer_path} --prompt 'Python is'"
    )
