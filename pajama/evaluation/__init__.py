"""Evaluating a checkpoint: perplexity on prepared data (:mod:`pajama.evaluation.perplexity`)
and lm-evaluation-harness tasks (:mod:`pajama.evaluation.harness`; during pre-training,
:mod:`pajama.evaluation.in_loop`). ``pajama evaluate`` runs either or both.

The harness modules import ``lm_eval`` (extra ``pajama[eval]``): they are imported only when
tasks are asked for.
"""

from __future__ import annotations

from pathlib import Path

from pajama import PajamaError


def evaluate(
    checkpoint: Path | None = None,
    data_dir: Path | None = None,
    tasks: str | list[str] | None = None,
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    include_path: Path | None = None,
    download_only: bool = False,
    output_path: Path | None = None,
    tokenizer_path: Path | None = None,
    max_tokens: int = 1_000_000,
    micro_batch_size: int = 4,
    block_size: int | None = None,
    mixture: dict[str, float] | None = None,
    accelerator: str = "auto",
    precision: str | None = None,
    document_mask: bool | None = None,
) -> dict:
    """Evaluate a checkpoint: perplexity on prepared data, lm-evaluation-harness tasks, or both.

    With --data_dir: loss and perplexity per subset and overall on held-out prepared data
    (deterministic, bounded by a token budget). With --tasks: EleutherAI's lm-evaluation-harness
    tasks (pip install 'pajama[eval]') on pajama's own model and tokenizer, giving the numbers
    the harness gives on the `pajama export` of the checkpoint; a table is printed and the
    harness's JSON written next to the checkpoint.

    Args:
        checkpoint: checkpoint directory, or a training out_dir (its newest checkpoint).
        data_dir: directory written by pajama prepare (same tokenizer as the checkpoint's data): perplexity.
        tasks: comma-separated lm-evaluation-harness tasks, groups or tags (hellaswag,arc_easy), tasks of --include_path, or tinyllama (TinyLlama's seven, zero-shot).
        num_fewshot: few-shot examples per task (default: the task's own, else 0).
        limit: examples per task: a number, or a fraction below 1 (default: all).
        batch_size: sequences per forward pass for --tasks.
        include_path: directory of task YAML files in the harness's format (local datasets, custom tasks).
        download_only: fetch the tasks' datasets into the Hugging Face cache and stop (on a login node; then evaluate with HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1).
        output_path: JSON file for the task results (default: <checkpoint>/lm_eval/results_<time>.json).
        tokenizer_path: the tokenizer the training data was prepared with (default: the copy kept with the checkpoint or its run).
        max_tokens: perplexity: at most this many predicted tokens are scored, shared equally by the subsets.
        micro_batch_size: perplexity: sequences per forward pass.
        block_size: perplexity: tokens per sequence (default: the model's context length).
        mixture: perplexity: subset weights of the overall loss (default: the checkpoint's training mixture, else LLaMA's).
        accelerator: auto, cpu, cuda or mps.
        precision: bf16-mixed, bf16-true, 16-mixed (autocast in that dtype) or 32-true; default: the fastest here (CPUs: measured).
        document_mask: perplexity: each token sees only its own document (see pretrain --document_mask); default: as the checkpoint was trained.
    """
    if tasks is None and data_dir is None:
        raise PajamaError("give --data_dir (perplexity on prepared data), --tasks (lm-evaluation-harness tasks), or both")
    if download_only:
        if tasks is None:
            raise PajamaError("--download_only fetches the datasets of --tasks: give --tasks")
        from pajama.evaluation.harness import download_tasks

        download_tasks(tasks, include_path)
        return {}
    if checkpoint is None:
        raise PajamaError("give --checkpoint: a checkpoint directory, or a training out_dir (its newest checkpoint)")
    result = {}
    if data_dir is not None:
        from pajama.evaluation.perplexity import evaluate as perplexity

        result["perplexity"] = perplexity(
            checkpoint, data_dir, max_tokens=max_tokens, micro_batch_size=micro_batch_size, block_size=block_size,
            mixture=mixture, accelerator=accelerator, precision=precision, document_mask=document_mask,
        )  # fmt: skip
    if tasks is not None:
        from pajama.evaluation.harness import evaluate_tasks

        result["tasks"] = evaluate_tasks(
            checkpoint, tasks, num_fewshot=num_fewshot, limit=limit, batch_size=batch_size, include_path=include_path,
            output_path=output_path, tokenizer_path=tokenizer_path, accelerator=accelerator, precision=precision,
        )  # fmt: skip
    return result
