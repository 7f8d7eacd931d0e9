"""Everything GPU-specific, measured in one run on one H100/H200 (about 8 minutes).

``python bench/gpu_bench.py [--out gpu_bench.json] [--parts traces memory ...] [--quick]``

The results JSON is rewritten after every measurement, so a run cut short keeps what it did;
each part starts only while ``--time_limit`` leaves time for it. Training runs go through
``pajama pretrain`` itself, each in its own process, on one GPU (strategy single) and random
tokens in a prepared directory (speed and memory do not depend on the text). A run is stopped
once its last step is logged: the checkpoint a run writes at its end (tens of GB for these
models) is not what is measured. Step times and throughput are medians over the steps after
the first ``WARMUP_STEPS`` (allocator warm-up, compilation).

1. ``traces``: the traced step (pajama.training.trace: device cuda, world size 1, strategy
   single) of every run below, before any run and in processes of their own (a trace sets up a
   fake process group): peak memory per category, FLOPs per token. For ``--micro_batch_size
   auto``, the micro-batch the plan chooses within 90% of the GPU's memory, as
   ``pajama pretrain`` does (pajama.training.plan). Needs no GPU (the memory of ``--gpu``).
2. ``memory``: traced peak against the measured one (``torch.cuda.max_memory_allocated`` of the
   same run, metrics.csv's peak_memory_gb) and their ratio: the ``1B`` preset at 2048, micro-batch
   8; ``llama3.2-1b`` at 8192, micro-batch 1, selective recompute; ``tinyllama-1.1b`` at 2048
   with the micro-batch auto picks (global batch 40).
3. ``recompute``: the ``1B`` run with ``--activation_checkpointing`` none, selective and full:
   peak memory (traced and measured) and step time.
4. ``loss``: bench/loss_bench.py on the GPU at Llama 3's 128,256-entry vocabulary (d 2048,
   16,384 tokens, bf16): memory of the full logits against the chunked loss at a few chunk
   sizes, speed of both, and the chunked loss's speed by chunk size.
5. ``kernels``: the model's attention under the flash kernel alone (heads shared and not);
   grouped-query attention through ``enable_gqa`` against key/value heads expanded first (bf16,
   forward + backward, TinyLlama's 32/4 heads); a non-finite step skipped by fused AdamW on the
   device without waiting for it (pajama.training.step.step_if_finite).
6. ``compile``: the ``1B`` run compiled: throughput and MFU against part 3's uncompiled run,
   and its measured memory against the same trace.
7. ``fp16``: the compiled run in ``16-mixed`` (fp16 autocast, dynamic loss scaling): throughput
   against bf16, and the loss scale it settled at.
8. ``document_mask``: ``tinyllama-1.1b`` at 2048, micro-batch 8, without and with
   ``--document_mask`` (not compiled, to fit the time): the mask's cost in throughput and memory.

``--quick`` runs every part at the smallest size (2 layers, short sequences, micro-batch 2 or
less, 4 steps, small loss shapes): for checking the script, not for numbers.
"""

from __future__ import annotations

import argparse
import csv
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from pajama.chunks import ChunkWriter, dtype_for_vocab
from pajama.memory import GB
from pajama.model import LLaMA
from pajama.model_config import ModelConfig, preset
from pajama.training.batch import fit_batch, split_batch
from pajama.training.plan import GPU_MEMORY_SHARE, choose
from pajama.training.trace import GPUS, estimate_step_time, trace_step

LOSS_BENCH = Path(__file__).with_name("loss_bench.py")
WARMUP_STEPS = 3  # steps left out of the medians (the first runs the allocator's warm-up and any compilation)
QUICK_LAYERS = 2


@dataclass(frozen=True)
class Run:
    """One training run of the bench: a preset at a sequence length on one GPU."""

    model: str
    seq: int
    micro_batch_size: int | str  # or "auto"
    batch_size: int  # global, in sequences
    recompute: str = "none"
    precision: str = "bf16-mixed"
    compile: bool = False
    document_mask: bool = False

    @property
    def name(self) -> str:
        flags = [self.recompute, self.precision] + ["compiled"] * self.compile + ["document_mask"] * self.document_mask
        return "-".join([self.model, str(self.seq), f"micro{self.micro_batch_size}", *flags])

    @property
    def traced_as(self) -> Run:
        """The run whose trace this one's is: compilation is not traced."""
        return replace(self, compile=False)

    def quick(self) -> Run:
        micro = self.micro_batch_size if self.micro_batch_size == "auto" else min(self.micro_batch_size, 2)
        return replace(self, seq=min(self.seq, 512), micro_batch_size=micro, batch_size=min(self.batch_size, 4))


ONE_B = Run("1B", 2048, 8, 8)
PARTS = {  # each part's runs (traces: those of every other part)
    "traces": [],
    "memory": [ONE_B, Run("llama3.2-1b", 8192, 1, 1, recompute="selective"), Run("tinyllama-1.1b", 2048, "auto", 40)],
    "recompute": [ONE_B, replace(ONE_B, recompute="selective"), replace(ONE_B, recompute="full")],
    "loss": [],
    "kernels": [],
    "compile": [ONE_B, replace(ONE_B, compile=True)],
    "fp16": [replace(ONE_B, compile=True), replace(ONE_B, compile=True, precision="16-mixed")],
    "document_mask": [Run("tinyllama-1.1b", 2048, 8, 8), Run("tinyllama-1.1b", 2048, 8, 8, document_mask=True)],
}


class Results:
    """The results so far, rewritten whole (to a temp name, then renamed) after each addition."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.data = path, dict(header)
        self.save()

    def add(self, key: str, value) -> None:
        self.data[key] = value
        self.save()
        print(f"{key}: {json.dumps(value)}", flush=True)

    def save(self) -> None:
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1))
        os.replace(tmp, self.path)


def model_config(run: Run, quick: bool) -> ModelConfig:
    """The run's model as ``pajama pretrain`` builds it (the random data has the preset's vocabulary)."""
    config = preset(run.model).replace(block_size=run.seq)
    return config.replace(n_layer=QUICK_LAYERS) if quick else config


# -- 1. traces -----------------------------------------------------------------------------------


def gpu_of(device_name: str, memory_bytes: float) -> str:
    """The key in GPUS of this device: the same model, the nearest memory size."""
    same = [key for key, gpu in GPUS.items() if gpu.name.split()[0] in device_name] or list(GPUS)
    return min(same, key=lambda key: abs(GPUS[key].memory_gb * 1e9 - memory_bytes))


def trace_run(run: Run, quick: bool, budget: float, gpu: str) -> dict:
    """The traced step of ``run`` as ``pajama pretrain`` plans it on one GPU with ``budget`` bytes
    (for micro-batch auto, the largest that fits, pajama.training.plan.choose, fitted to the
    batch), and the step time estimate_step_time gives it on ``gpu`` (at its assumed MFU)."""
    config = model_config(run, quick)
    micro, chosen = run.micro_batch_size, {}
    if micro == "auto":
        started = time.perf_counter()
        choice = choose(config, 1, "auto", run.recompute, budget, run.batch_size, run.precision, "single", "cuda", False, document_mask=run.document_mask)
        micro, _, _ = fit_batch(run.batch_size, 1, choice.micro_batch_size)
        chosen = {"fits": choice.micro_batch_size, "budget_gib": budget / GB, "choose_seconds": time.perf_counter() - started}
    _, accumulation, _ = split_batch(run.batch_size, micro, 1)
    trace = trace_step(config, 1, micro, run.seq, run.precision, "single", run.recompute, accumulation, False, "cuda", document_mask=run.document_mask)
    return {
        "micro_batch_size": micro, "accumulation": accumulation, **chosen, "traced_peak_gib": trace.peak_bytes["total"] / GB,
        "traced_gib": {k: round(v / GB, 3) for k, v in trace.peak_bytes.items()}, "flops_per_token": trace.flops / trace.tokens_per_device,
        "estimated_step_seconds": estimate_step_time(trace, gpu).step_seconds, "trace_seconds": trace.seconds,
    }  # fmt: skip


def traces(runs: list[Run], quick: bool, budget: float, gpu: str, results: Results) -> dict[str, dict]:
    """Every run's trace, in parallel processes (each sets up its own fake process group; a
    trace is single-threaded Python), all before any GPU work, which they would slow."""
    traced: dict[str, dict] = {}
    unique = list({run.traced_as.name: run.traced_as for run in runs}.values())
    workers = max(1, min(len(unique), os.cpu_count() or 1))
    print(f"tracing {len(unique)} run(s) in {workers} process(es)", flush=True)
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(trace_run, run, quick, budget, gpu): run for run in unique}
        for future in as_completed(futures):
            run = futures[future]
            try:
                traced[run.name] = future.result()
            except Exception as e:  # one trace failing leaves the others
                traced[run.name] = {"error": f"{type(e).__name__}: {e}"[:500]}
            results.add(f"trace/{run.name}", traced[run.name])
    return traced


# -- training runs -------------------------------------------------------------------------------


def random_prepared_dir(directory: Path, tokens: int, vocab: int) -> None:
    """A prepared directory of random tokens, ``tokens`` per subset, a document every 800."""
    rng = np.random.default_rng(0)
    dtype = dtype_for_vocab(vocab)
    chunks = []
    directory.mkdir(parents=True)
    for subset in ("arxiv", "c4", "common_crawl"):
        writer = ChunkWriter(directory, f"{subset}_random-0000", 2049 * 1024, dtype, filler=2)
        ids = rng.integers(3, vocab, tokens).astype(dtype)
        ids[::800] = 1  # a document starts every 800 tokens (BOS), for --document_mask
        writer.add(ids)
        chunks += [{"file": name, "subset": subset, "tokens": n} for name, n in writer.close()]
    manifest = {"tokenizer": {"sha256": "random", "vocab_size": vocab, "bos_id": 1, "eos_id": 2}, "dtype": str(dtype), "chunk_size": 2049 * 1024, "chunks": chunks}
    (directory / "manifest.json").write_text(json.dumps(manifest))


def logged_rows(out_dir: Path) -> list[dict]:
    """The complete rows of a run's metrics.csv so far (a row still being written is left out)."""
    path = out_dir / "metrics.csv"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines(keepends=True) if line.endswith("\n")]
    return [row for row in csv.DictReader(lines) if row["step_time"]]


def train(run: Run, root: Path, steps: int, quick: bool, timeout: float) -> dict:
    """``run`` through ``pajama pretrain`` in a process of its own, stopped once step ``steps``
    is logged; its medians, peak memory and the micro-batch it trained with."""
    config = model_config(run, quick)
    out_dir = root / run.name
    command = [
        sys.executable, "-m", "pajama.cli", "pretrain", "--train_data_dir", str(root / f"data-{config.vocab_size}"), "--out_dir", str(out_dir),
        "--model_name", run.model, "--devices", "1", "--accelerator", "cuda", "--precision", run.precision, "--compile", str(run.compile).lower(),
        "--batch_size", str(run.batch_size), "--micro_batch_size", str(run.micro_batch_size), "--block_size", str(run.seq),
        "--activation_checkpointing", run.recompute, "--document_mask", str(run.document_mask).lower(), "--max_iters", str(steps),
        "--warmup_iters", "2", "--log_interval", "1", "--eval_interval", "1000000", "--save_interval", "1000000", "--val_fraction", "0",
        "--resume", "none",
    ]  # fmt: skip
    if quick:
        command += ["--model_overrides", f"{{n_layer: {QUICK_LAYERS}}}"]
    started = time.monotonic()
    with open(root / f"{run.name}.log", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while process.poll() is None and len(logged_rows(out_dir)) < steps and time.monotonic() - started < timeout:
            time.sleep(0.5)
        if process.poll() is None:  # done (or out of time): stopped before its end-of-run checkpoint
            os.killpg(process.pid, signal.SIGKILL)  # the run's own session, started above
            process.wait()
    rows = logged_rows(out_dir)
    result = {"seconds": time.monotonic() - started, "steps_logged": len(rows)}
    if len(rows) < steps:
        tail = (root / f"{run.name}.log").read_text(errors="replace")[-1500:]
        return result | {"error": f"exit {process.returncode} after {len(rows)} of {steps} steps" + (" (time limit)" if time.monotonic() - started >= timeout else ""), "log_tail": tail}
    timed = rows[WARMUP_STEPS:] or rows[-1:]
    train_config = json.loads((out_dir / "config.json").read_text())["train"]

    def median(column: str) -> float | None:
        values = [float(r[column]) for r in timed if r.get(column)]
        return statistics.median(values) if values else None

    return result | {
        "micro_batch_size": train_config["micro_batch_size"], "activation_checkpointing": train_config["activation_checkpointing"],
        "tokens_per_sec": median("tokens_per_sec"), "mfu": median("mfu"), "step_time": median("step_time"), "data_wait": median("data_wait"),
        "measured_peak_gib": max(float(r["peak_memory_gb"]) for r in rows), "loss_scale": float(rows[-1]["loss_scale"]) if rows[-1].get("loss_scale") else None,
        "skipped_steps": sum(int(float(r["skipped"] or 0)) for r in rows), "last_loss": float(rows[-1]["loss"]),
    }  # fmt: skip


def measured(run: Run, traced: dict, root: Path, args, deadline: float, results: Results, done: dict[str, dict]) -> dict:
    """``run``'s measurements beside its trace (once per run, whichever part asks first)."""
    if run.name not in done and deadline - time.monotonic() < 30:
        return {"skipped": "time limit"}
    if run.name not in done:
        print(f"training {run.name}", flush=True)
        result = train(run, root, args.steps, args.quick, timeout=max(0.0, deadline - time.monotonic()))
        trace = traced.get(run.traced_as.name, {})
        result |= {k: trace[k] for k in ("fits", "budget_gib") if k in trace}  # micro-batch auto: what the plan found
        if "traced_peak_gib" in trace and "measured_peak_gib" in result:
            result |= {"traced_peak_gib": trace["traced_peak_gib"], "measured_over_traced": result["measured_peak_gib"] / trace["traced_peak_gib"]}
            result |= {"estimated_step_time": trace["estimated_step_seconds"], "measured_over_estimated_step_time": result["step_time"] / trace["estimated_step_seconds"]}
            if trace["micro_batch_size"] != result["micro_batch_size"]:
                result["note"] = f"traced at micro-batch {trace['micro_batch_size']}, trained at {result['micro_batch_size']}"
        done[run.name] = result
        results.add(f"run/{run.name}", result)
    return done[run.name]


def ratio(a: dict, b: dict, key: str) -> float | None:
    return a[key] / b[key] if a.get(key) and b.get(key) else None


# -- 4. the chunked loss -------------------------------------------------------------------------


def markdown_rows(text: str) -> list[dict[str, str]]:
    """The rows of the markdown table in ``text`` (loss_bench's output), keyed by its header."""
    lines = [line.strip().strip("|").split("|") for line in text.splitlines() if line.startswith("|") and not line.startswith("|---")]
    header, *rows = [[cell.strip() for cell in line] for line in lines] or [[]]
    return [dict(zip(header, row)) for row in rows]


def loss_bench(quick: bool, deadline: float, results: Results) -> None:
    """bench/loss_bench.py's modes on the GPU, each in a process of its own."""
    shape = ["--tokens", "2048", "--dim", "256"] if quick else ["--tokens", "16384", "--dim", "2048"]
    common = ["--device", "cuda", "--precision", "bf16-mixed", *shape, "--runs", "1" if quick else "5"]
    chunk_sizes = [256] if quick else [512, 2048, 8192]  # 2048: the default at d 2048
    sweeps = [256, 1024] if quick else [256, 512, 1024, 2048, 4096, 8192]
    commands = {f"memory/chunk_{c}": ["memory", "--vocab", "128256", "--chunk_tokens", str(c)] for c in chunk_sizes}
    commands |= {"speed": ["speed", "--vocab", "32000", "128256"], "chunks": ["chunks", "--vocab", "128256", "--chunk_tokens", *map(str, sweeps)]}
    for name, mode in commands.items():
        left = deadline - time.monotonic()
        if left < 20:
            results.add(f"loss/{name}", {"skipped": "time limit"})
            continue
        try:
            done = subprocess.run([sys.executable, str(LOSS_BENCH), *mode, *common], capture_output=True, text=True, timeout=left, check=False)
        except subprocess.TimeoutExpired:
            results.add(f"loss/{name}", {"error": "time limit"})
            continue
        if done.returncode:
            results.add(f"loss/{name}", {"error": f"exit {done.returncode}", "stderr_tail": done.stderr[-1500:]})
        else:
            results.add(f"loss/{name}", {"setting": done.stdout.splitlines()[0], "rows": markdown_rows(done.stdout)})


# -- 5. kernels ----------------------------------------------------------------------------------


def flash_attention_check(model: str, seq: int) -> dict:
    """Forward and backward of one block of ``model`` with SDPA restricted to the flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    config = preset(model).replace(n_layer=1, block_size=seq)
    net = LLaMA(config).cuda()
    net.init_weights(0)
    idx = torch.randint(0, config.vocab_size, (2, seq), device="cuda")
    try:
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.autocast("cuda", dtype=torch.bfloat16):
            net(idx).float().sum().backward()
        return {"flash_attention": True}
    except RuntimeError as e:
        return {"flash_attention": False, "error": str(e)[:300]}


def gqa_attention_check(batch: int, seq: int, heads: int = 32, kv_heads: int = 4, head_size: int = 64) -> dict:
    """ms per forward + backward of causal attention, key/value heads shared vs expanded first."""
    q = torch.randn(batch, heads, seq, head_size, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(batch, kv_heads, seq, head_size, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))

    def run(expand: bool) -> float:
        def step():
            if expand:
                kk, vv = (t.repeat_interleave(heads // kv_heads, dim=1) for t in (k, v))
                y = torch.nn.functional.scaled_dot_product_attention(q, kk, vv, is_causal=True)
            else:
                y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            y.float().sum().backward()

        for _ in range(3):
            step()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(20):
            step()
        torch.cuda.synchronize()
        return (time.perf_counter() - start) / 20 * 1e3

    shared, expanded = run(False), run(True)
    return {"enable_gqa_ms": shared, "expand_ms": expanded, "expand_over_shared": expanded / shared}


def fused_skip_check() -> dict:
    """pajama.training.step.step_if_finite with fused AdamW on the GPU: a non-finite step leaves
    the weights as they were, a finite one updates them, and neither waits for the device
    (CUDA's sync debug mode raises on any operation that would)."""
    from pajama.training.step import step_if_finite

    weight = torch.nn.Parameter(torch.ones(1024, device="cuda"))
    optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True)
    flags = [torch.tensor(finite, device="cuda") for finite in (False, True)]  # copied to the GPU before the debug mode: a copy waits
    snapshots = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for finite in flags:
            weight.grad = torch.ones_like(weight)
            snapshots.append(weight.detach().clone())
            step_if_finite(optimizer, finite)
    except RuntimeError as e:
        return {"fused_skip": False, "error": str(e)[:300]}
    finally:
        torch.cuda.set_sync_debug_mode(0)
    skipped, updated = torch.equal(snapshots[0], snapshots[1]), not torch.equal(snapshots[1], weight.detach())
    return {"fused_skip": skipped and updated, "nonfinite_step_left_weights": skipped, "finite_step_updated": updated, "waited_for_device": False}


def kernels(quick: bool, results: Results) -> None:
    seq = 256 if quick else 2048
    for model in ("1B", "tinyllama-1.1b"):  # key/value heads as many as query heads; shared (enable_gqa)
        results.add(f"kernels/flash_{model}", flash_attention_check(model, seq))
    results.add("kernels/gqa", gqa_attention_check(1 if quick else 4, seq))
    results.add("kernels/fused_skip", fused_skip_check())
    torch.cuda.empty_cache()  # the training runs' processes get the memory


# -- the parts -----------------------------------------------------------------------------------


def run_parts(args, traced: dict, results: Results, deadline: float) -> None:
    """Parts 2 to 8 on the GPU, in order, each while time is left."""
    done: dict[str, dict] = {}
    runs = {part: [r.quick() if args.quick else r for r in PARTS[part]] for part in PARTS}
    with tempfile.TemporaryDirectory(prefix="gpu_bench-") as tmp:
        root = Path(tmp)
        tokens = 4 * 2049 * 64 if args.quick else 2 * 2049 * 1024  # per subset, enough for every run's steps
        for vocab in {model_config(r, args.quick).vocab_size for part in args.parts for r in runs[part]}:
            random_prepared_dir(root / f"data-{vocab}", tokens, vocab)
        for part in [p for p in args.parts if p != "traces"]:
            if deadline - time.monotonic() < 30:
                results.add(part, {"skipped": "time limit"})
                continue
            print(f"-- {part}", flush=True)
            if part == "loss":
                loss_bench(args.quick, deadline, results)
            elif part == "kernels":
                kernels(args.quick, results)
            else:
                measures = [measured(run, traced, root, args, deadline, results, done) for run in runs[part]]
                comparison = compare(part, runs[part], measures)
                if comparison:
                    results.add(part, comparison)


def compare(part: str, runs: list[Run], measures: list[dict]) -> dict:
    """The part's runs side by side (their full results are under run/<name>)."""
    keys = ("micro_batch_size", "fits", "traced_peak_gib", "measured_peak_gib", "measured_over_traced", "step_time", "measured_over_estimated_step_time", "tokens_per_sec", "mfu", "loss_scale")
    table = {run.name: {k: m[k] for k in (*keys, "error", "skipped") if m.get(k) is not None} for run, m in zip(runs, measures)}
    if part in ("compile", "fp16", "document_mask") and len(measures) == 2:
        table["second_over_first_tokens_per_sec"] = ratio(measures[1], measures[0], "tokens_per_sec")
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("gpu_bench.json"), help="results JSON, rewritten as the bench goes")
    parser.add_argument("--parts", nargs="+", choices=list(PARTS), default=list(PARTS), help="parts to run, in this order (default: all; without CUDA only traces runs)")
    parser.add_argument("--steps", type=int, default=None, help=f"optimizer steps per training run (default 8; --quick 4); the medians leave out the first {WARMUP_STEPS}")
    parser.add_argument("--time_limit", type=float, default=450, help="seconds: no part or run starts after this, and a run still going then is stopped")
    parser.add_argument("--gpu", choices=sorted(GPUS), default="h200", help="without CUDA: the GPU the traces plan for (its memory, and peak figures for the step-time estimate)")
    parser.add_argument("--quick", action="store_true", help="every part at the smallest size, to check the script")
    args = parser.parse_args()
    args.steps = args.steps or (4 if args.quick else 8)
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than {WARMUP_STEPS}")
    deadline = time.monotonic() + args.time_limit
    cuda = torch.cuda.is_available()
    memory = torch.cuda.get_device_properties(0).total_memory if cuda else GPUS[args.gpu].memory_gb * 1e9
    gpu = gpu_of(torch.cuda.get_device_name(), memory) if cuda else args.gpu
    header = {"device": torch.cuda.get_device_name() if cuda else f"no CUDA device: traces for {GPUS[gpu].name}", "gpu": gpu, "torch": torch.__version__}
    results = Results(args.out, header | {"quick": args.quick, "steps": args.steps, "budget_gib": GPU_MEMORY_SHARE * memory / GB})
    args.parts = sorted(set(args.parts), key=list(PARTS).index)
    # Traced first, before any GPU work: the traces part traces every run, else the parts' own.
    runs = [r.quick() if args.quick else r for part in (PARTS if "traces" in args.parts else args.parts) for r in PARTS[part]]
    if not cuda and args.parts != ["traces"]:
        print("no CUDA device: only the traces run", flush=True)
    traced = traces(runs, args.quick, GPU_MEMORY_SHARE * memory, gpu, results) if runs else {}
    if cuda:
        run_parts(args, traced, results, deadline)
    print(f"results in {args.out}", flush=True)


if __name__ == "__main__":
    main()
