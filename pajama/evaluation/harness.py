"""lm-evaluation-harness tasks on a pajama checkpoint: the model adapter, the tasks, the run,
the result table and its JSON.

EleutherAI's lm-evaluation-harness (``lm_eval``, extra ``pajama[eval]``) is how the field
compares pre-trained models (HellaSwag, ARC, PIQA ...). :class:`PajamaLM` puts pajama's own
model and tokenizer behind the harness's model interface, so a checkpoint (full or sharded)
is evaluated as it is, without an export, and gives the numbers lm-evaluation-harness's own
Hugging Face model (``HFLM``) gives on ``pajama export``'s output:

* a context is encoded as a document is in training, BOS first; the continuation's tokens are
  those the whole text has past the context's (trailing spaces of the context moved to the
  continuation), as the harness's ``_encode_pair`` does (inherited from its ``TemplateLM``).
  HFLM adds BOS through the tokenizer: an exported SentencePiece tokenizer says so in its
  ``tokenizer_config.json``; a ``tokenizer.json`` only if its post-processor adds it (Llama
  3's does), so give HFLM ``add_bos_token=True`` for one that does not;
* what does not fit the model's context is cut from the left, as HFLM cuts it;
* generation is greedy, with the KV cache, until a stop string, EOS or ``max_gen_toks``.

This module imports ``lm_eval``; nothing else in pajama does until ``--tasks`` (or
``pretrain --eval_tasks``) is used.
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import functools
import json
import os
import random
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pajama import PajamaError
from pajama.chunks import write_atomic

try:
    import lm_eval  # noqa: F401
    from lm_eval.api.model import TemplateLM
except ImportError as e:
    raise PajamaError(f"lm-evaluation-harness tasks need the lm_eval package ({e}): pip install 'pajama[eval]'") from None

# TinyLlama's published evaluation: seven tasks, zero-shot, the metric its table reports for
# each (acc_norm where the task has it), in its table's order. ``--tasks tinyllama`` runs them.
TINYLLAMA = {
    "hellaswag": "acc_norm", "openbookqa": "acc_norm", "winogrande": "acc", "arc_challenge": "acc_norm",
    "arc_easy": "acc_norm", "boolq": "acc", "piqa": "acc_norm",
}  # fmt: skip
GROUPS = {"tinyllama": TINYLLAMA}
# simple_evaluate's seeds (python, numpy, few-shot sampler), used on every path so that pajama's
# runs, in training or after, draw what the harness's own runs draw (few-shot examples, and
# whatever a task's document processing draws). Its torch seed is left out: greedy evaluation
# draws nothing from torch, and training's generators stay untouched.
SEEDS = (0, 1234, 1234)
MAX_GEN_TOKS = 256  # the harness's default for a task that sets none
# Draws for the standard error of metrics without a closed form (perplexity, f1 ...; accuracy
# has one). The harness's default is 100,000 in forked worker processes, and forking a process
# that holds torch's threads can hang it: 1,000 draws in this process are quick and enough.
BOOTSTRAP_ITERS = 1000


def task_names(tasks: str | list[str] | None) -> list[str]:
    """``--tasks`` as a list of names: comma-separated text or a list, duplicates dropped."""
    if tasks is None:
        return []
    items = tasks.split(",") if isinstance(tasks, str) else [p for t in tasks for p in str(t).split(",")]
    names = list(dict.fromkeys(n.strip() for n in items if n.strip()))
    if not names:
        raise PajamaError("--tasks names no task")
    return names


# -- the model --------------------------------------------------------------------------


@dataclass(frozen=True)
class Share:
    """This process's part of the work when several evaluate together (pre-training under
    FSDP or DDP): each holds every request, computes its own share, and the results are
    summed across the processes. Every process runs the same number of forward passes (FSDP
    gathers the weights in each), with dummy ones where its share ends early."""

    rank: int = 0
    world: int = 1

    def mine(self, items: list) -> list:
        """Every ``world``-th item from ``rank``, padded with None to the same count on every process."""
        count = -(-len(items) // self.world)
        own = items[self.rank :: self.world]
        return own + [None] * (count - len(own))

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t

    def any(self, flag: bool, device: torch.device) -> bool:
        if self.world == 1:
            return flag
        return bool(self.sum(torch.tensor(float(flag), device=device)) > 0)

    def gather(self, items: dict) -> dict:
        if self.world == 1:
            return items
        everyone: list = [None] * self.world
        torch.distributed.all_gather_object(everyone, items)
        return {k: v for part in everyone for k, v in part.items()}


class PajamaLM(TemplateLM):
    """lm-evaluation-harness's model interface on a pajama model and its tokenizer.

    Args:
        model: the LLaMA (or it wrapped by Fabric for training), in eval mode.
        config: its ModelConfig.
        tokenizer: the tokenizer its data was prepared with.
        device: where the model is.
        batch_size: sequences per forward pass of log-likelihood requests.
        autocast: run the forward pass under autocast in this dtype (None: as the model is).
        cache_dtype: dtype of the KV cache when generating (that of the keys the model computes).
        share: this process's share of the work when several evaluate together.
        progress: show a progress bar.
    """

    def __init__(self, model, config, tokenizer, device: torch.device, batch_size: int = 16, autocast: torch.dtype | None = None,
                 cache_dtype: torch.dtype = torch.float32, share: Share | None = None, progress: bool = True) -> None:  # fmt: skip
        super().__init__()
        self.model, self.config, self.tokenizer = model, config, tokenizer
        self._device = device
        self.batch_size = batch_size
        self.autocast, self.cache_dtype = autocast, cache_dtype
        self.share = share or Share()
        self.progress = progress
        self._truncated: set[int] = set()  # the contexts cut from the left to fit the model's, by hash

    @property
    def truncated(self) -> int:
        """How many contexts (of any number of requests each) were cut from the left to fit the model's."""
        return len(self._truncated)

    def truncation_note(self) -> str | None:
        """One line saying how many contexts were cut from the left (None: none was)."""
        if not self._truncated:
            return None
        return f"note: {self.truncated} context(s) longer than the model's context of {self.max_length} tokens were cut from the left, as lm-evaluation-harness cuts them"

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        # What an empty context is conditioned on: BOS, as every training document starts.
        return self.tokenizer.bos_id

    @property
    def max_length(self) -> int:
        return self.config.block_size

    @property
    def max_gen_toks(self) -> int:
        return MAX_GEN_TOKS

    @property
    def device(self) -> torch.device:
        return self._device

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        # BOS unless told otherwise: a text is presented as a document starts in training.
        return self.tokenizer.encode(string, bos=add_special_tokens is not False, eos=False)

    def tok_decode(self, tokens: list[int], **kwargs) -> str:
        return self.tokenizer.decode(tokens)

    def apply_chat_template(self, chat_history, add_generation_prompt=True) -> str:
        raise PajamaError("a pre-trained pajama model has no chat template: evaluate tasks written for base models (no --apply_chat_template)")

    def _forward(self, idx: torch.Tensor, caches=None, positions: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.autocast or torch.float32, enabled=self.autocast not in (None, torch.float32)):
            return self.model(idx, caches, positions=positions)

    def _bar(self, total: int, desc: str):
        from pajama.progress import progress_bar

        return progress_bar(total=total, desc=desc, unit="batch", leave=False, dynamic_ncols=True, disable=not self.progress or self.share.rank != 0)

    # -- log-likelihoods

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)  # our own bar counts batches

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """(log-probability, whether greedy) of each (key, context ids, continuation ids): in
        batches of similar lengths (longest first, so a batch too large fails at once), each
        sequence padded on the right, which a causal model never looks at."""
        rows = []
        for _, context, continuation in requests:
            if not continuation:
                raise PajamaError("a task asks for the log-likelihood of an empty continuation (its text encodes to no token of its own)")
            if len(continuation) > self.max_length:
                raise PajamaError(f"a task asks for the log-likelihood of {len(continuation)} tokens; the model's context holds {self.max_length}")
            whole = context + continuation
            if len(whole) > self.max_length + 1:
                self._truncated.add(hash(tuple(context)))
            rows.append((whole[-(self.max_length + 1) :], len(continuation)))
        order = sorted(range(len(rows)), key=lambda i: (-len(rows[i][0]), rows[i][0]))
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        out = torch.zeros(len(rows), 2, dtype=torch.float64, device=self.device)
        mine = self.share.mine(batches)
        with self._bar(len(mine), "log-likelihoods") as bar:
            for batch in mine:
                if batch is None:  # this process's share has ended: a pass for FSDP's sake, result unused
                    self._score([rows[i] for i in batches[0]])
                else:
                    out[batch] = self._score([rows[i] for i in batch])
                bar.update(1)
        out = self.share.sum(out).tolist()
        return [(ll, greedy > 0.5) for ll, greedy in out]

    @torch.no_grad()
    def _score(self, rows: list[tuple[list[int], int]]) -> torch.Tensor:
        """(sum of log-probabilities of the last ``n`` tokens, whether each is the most likely) per
        (tokens, n), left on the device: nothing waits for it here. Logits are made and normalised
        (in fp32) at the continuations' positions only: at every position they would take
        B x T x vocab x 4 bytes, 16.8 GB for 16 sequences of 2048 tokens over Llama 3's vocabulary."""
        length, width = max(len(tokens) - 1 for tokens, _ in rows), max(n for _, n in rows)
        idx = torch.full((len(rows), length), self.tokenizer.eos_id, dtype=torch.long)
        positions = torch.zeros(len(rows), width, dtype=torch.long)  # where each continuation token is predicted; 0 past a shorter one's end
        targets = torch.zeros(len(rows), width, dtype=torch.long)
        scored = torch.zeros(len(rows), width, dtype=torch.bool)
        for r, (tokens, n) in enumerate(rows):
            end = len(tokens) - 1
            idx[r, :end] = torch.tensor(tokens[:-1])
            positions[r, :n] = torch.arange(end - n, end)
            targets[r, :n] = torch.tensor(tokens[-n:])
            scored[r, :n] = True
        positions, targets, scored = (t.to(self.device) for t in (positions, targets, scored))
        logprobs = F.log_softmax(self._forward(idx.to(self.device), positions=positions).float(), dim=-1)  # (B, width, vocab)
        picked = logprobs.gather(-1, targets[..., None]).squeeze(-1).masked_fill(~scored, 0.0)
        greedy = ((logprobs.argmax(-1) == targets) | ~scored).all(-1)
        return torch.stack([picked.sum(-1).double(), greedy.double()], dim=-1)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        """Log-likelihood of whole texts (perplexity tasks): each cut into windows of the
        model's context, the first conditioned on BOS, every token scored once."""
        from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

        windows, owners = [], []
        for i, request in enumerate(requests):
            (text,) = request.args
            tokens = self.tok_encode(text, add_special_tokens=False)
            for window in get_rolling_token_windows(token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1):
                windows.append((None, *make_disjoint_window(window)))
                owners.append(i)
        totals = [0.0] * len(requests)
        for i, (ll, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[i] += ll
        return totals

    # -- generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        """Greedy continuations, one request at a time with the KV cache, each stopped at
        the first of its ``until`` strings (cut there), EOS or its ``max_gen_toks``."""
        jobs = []
        for request in requests:
            context, kwargs = request.args
            kwargs = dict(kwargs or {})
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            limit = next((int(kwargs.pop(k)) for k in ("max_gen_toks", "max_new_tokens", "max_tokens") if kwargs.get(k) is not None), self.max_gen_toks)
            if kwargs.get("do_sample") or float(kwargs.get("temperature") or 0) > 0:
                raise PajamaError(f"task {request.task_name} samples its generations (do_sample / temperature); pajama evaluates greedy generation only")
            room = self.max_length - limit
            if room <= 0:
                raise PajamaError(f"task {request.task_name} generates up to {limit} tokens; the model's context is {self.max_length}")
            prompt = self.tok_encode(context)
            if len(prompt) > room:
                self._truncated.add(hash(tuple(prompt)))
            jobs.append((prompt[-room:], until, limit))
        texts = {}
        with self._bar(-(-len(jobs) // self.share.world), "generate") as bar:
            for i in self.share.mine(list(range(len(jobs)))):
                if i is None:
                    self._generate(None)
                else:
                    texts[i] = self._generate(jobs[i])
                bar.update(1)
        texts = self.share.gather(texts)
        return [texts[i] for i in range(len(jobs))]

    @torch.no_grad()
    def _generate(self, job: tuple[list[int], list[str], int] | None) -> str:
        """One greedy continuation; None: forward passes only, as many as the other
        processes take on theirs (all must run the same number under FSDP)."""
        from pajama.model import KVCache

        running = job is not None
        prompt, until, limit = job if running else ([self.tokenizer.bos_id], [], 1)
        caches = [KVCache(1, self.config, self.device, self.cache_dtype, capacity=len(prompt) + limit) for _ in range(self.config.n_layer)]
        logits = self._forward(torch.tensor([prompt], device=self.device), caches)[:, -1]
        out: list[int] = []
        text = ""
        while True:
            if running:
                token = int(logits[..., : self.tokenizer.vocab_size].argmax(-1))  # rows past the tokenizer's (padding) are no text
                if token == self.eot_token_id:
                    running = False
                else:
                    out.append(token)
                    text = self.tok_decode(out)
                    running = len(out) < limit and not any(s and s in text for s in until)
            if not self.share.any(running, self.device):
                break
            if running:
                logits = self._forward(torch.tensor([[out[-1]]], device=self.device), caches)[:, -1]
            else:
                self._forward(torch.tensor([[self.tokenizer.bos_id]], device=self.device))  # keep step with the others
        for stop in until:  # as the harness cuts HFLM's generations
            if stop:
                text = text.split(stop)[0]
        return text


# -- the tasks --------------------------------------------------------------------------


@dataclass
class Tasks:
    """Tasks loaded once (datasets read, documents processed), to be evaluated any number of times."""

    names: list[str]  # leaf tasks, in the order asked
    loaded: dict  # what the harness's task loading returned
    leaves: dict  # task name -> Task
    summaries: dict[str, dict[str, str]] = field(default_factory=dict)  # pajama group -> {task: metric}

    def columns(self) -> list[str]:
        """The ``task/<task>/<metric>`` names :func:`flatten` gives, known before any run: each
        task's metrics, each harness group's aggregates (``mmlu``'s acc over its subtasks) and
        each pajama group's average."""
        filters = {name: [getattr(f, "name", "none") for f in getattr(task, "_filters", [])] or ["none"] for name, task in self.leaves.items()}
        out = [_column(name, metric, f) for name, task in self.leaves.items() for f in filters[name] for metric in task.aggregation()]
        for group_name, group in (self.loaded.get("groups") or {}).items():
            leaves = [t.task_name for t in group.get_all_tasks() if t.task_name in self.leaves]
            for aggregate in group.aggregate_metric_list or []:
                # As the harness aggregates: over the filters named, else over those its subtasks report the metric under.
                named = [aggregate.filter_list] if isinstance(aggregate.filter_list, str) else aggregate.filter_list
                found = sorted({f for leaf in leaves if aggregate.metric in self.leaves[leaf].aggregation() for f in filters[leaf]})
                out += [_column(group_name, aggregate.metric, f) for f in (named or found)]
        return out + [f"task/{group}/average" for group in self.summaries]


def _column(task: str, metric: str, filter_name: str) -> str:
    return f"task/{task}/{metric}" if filter_name == "none" else f"task/{task}/{metric}:{filter_name}"


@contextlib.contextmanager
def _seeded() -> Iterator[None]:
    """The harness's seeds inside, the caller's random state back after (training's, say)."""
    state = random.getstate(), np.random.get_state()
    random.seed(SEEDS[0])
    np.random.seed(SEEDS[1])
    try:
        yield
    finally:
        random.setstate(state[0])
        np.random.set_state(state[1])


@contextlib.contextmanager
def _environment(**variables: str) -> Iterator[None]:
    before = {k: os.environ.get(k) for k in variables}
    os.environ.update(variables)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _task_manager(names: list[str], include_path: Path | None):
    """The harness's task index: the local tasks alone when they hold every name asked
    (indexing the harness's own thousands takes seconds), else everything."""
    if include_path is not None:
        include_path = Path(include_path).expanduser().resolve()
        if not include_path.exists():
            raise PajamaError(f"--include_path {include_path}: not found (a directory of lm-evaluation-harness task YAML files)")
        local = _index(str(include_path), defaults=False)
        if local is not None and all(n in local.all_tasks for n in names):
            return local
    return _index(str(include_path) if include_path is not None else None, defaults=True)


@functools.lru_cache(maxsize=8)
def _index(include_path: str | None, defaults: bool):
    """A TaskManager (it only reads YAML files: one per process will do); None if this
    harness cannot leave out its own tasks."""
    from lm_eval.tasks import TaskManager

    if defaults:
        return TaskManager(include_path=include_path)
    try:
        return TaskManager(include_path=include_path, include_defaults=False)
    except TypeError:  # an older harness, without include_defaults
        return None


def check_tasks(tasks: str | list[str], include_path: Path | None = None):
    """The names asked (pajama's groups expanded) and the task index, or a PajamaError naming
    an unknown task with the closest known names."""
    asked = task_names(tasks)
    names = list(dict.fromkeys(t for n in asked for t in GROUPS.get(n, [n])))
    manager = _task_manager(names, include_path)
    known = set(manager.all_tasks)
    expanded = []
    for name in names:
        # A pattern (mmlu_*) stands for the names it matches, as on the harness's command line.
        found = [name] if name in known else sorted(manager.match_tasks([name])) if any(c in name for c in "*?[") else []
        if not found:
            close = difflib.get_close_matches(name, list(known) + list(GROUPS), n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            where = f" or in {include_path}" if include_path else " (local tasks: --include_path DIR of task YAML files)"
            raise PajamaError(f"unknown task {name!r}: not a task, group or tag of lm-evaluation-harness{where}{hint}")
        expanded += found
    names = list(dict.fromkeys(expanded))
    chat = [n for n in names if n.endswith("_chat")]  # the harness's name for a task's variant for chat models
    if chat:
        base = chat[0].removesuffix("_chat")
        hint = f" (try {base})" if base in known else ""
        raise PajamaError(f"task {chat[0]} is written for chat models, whose prompts go through a chat template; a pre-trained pajama model has none{hint}")
    return asked, names, manager


def load_tasks(tasks: str | list[str], include_path: Path | None = None, num_fewshot: int | None = None) -> Tasks:
    """Load tasks by name (a task, group or tag of the harness, one defined by the YAML files
    under ``include_path``, or ``tinyllama``), configured as the harness's ``simple_evaluate``
    configures them: ``num_fewshot`` where the task does not fix it to 0, else the task's own
    (0 if it has none), and the same few-shot seed."""
    asked, names, manager = check_tasks(tasks, include_path)
    try:
        with _seeded():
            loaded = manager.load(names) if hasattr(manager, "load") else _legacy_load(names, manager)
    except PajamaError:
        raise
    except Exception as e:  # the datasets library's, mostly: no network, not in the cache
        offline = any(os.environ.get(v) in ("1", "true", "TRUE", "True") for v in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"))
        hint = (
            "; offline, a dataset must be in the cache already: run pajama evaluate --tasks ... --download_only where there is internet, with the same HF_HOME"
            if offline
            else "; on a machine without internet, fetch the datasets first where there is (--download_only) and set HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1"
        )
        message = " ".join(str(e).split())[:300]
        raise PajamaError(f"loading task(s) {', '.join(names)}: {type(e).__name__}: {message}{hint}") from None
    leaves = loaded["tasks"] if "tasks" in loaded else dict(_legacy_leaves(loaded))
    for task in leaves.values():
        if num_fewshot is not None and task.get_config("num_fewshot") != 0:
            task.set_config(key="num_fewshot", value=num_fewshot)
        elif task.get_config("num_fewshot") is None:
            task.set_config(key="num_fewshot", value=0)
    summaries = {n: GROUPS[n] for n in asked if n in GROUPS}
    return Tasks(names=list(leaves), loaded=loaded, leaves=leaves, summaries=summaries)


def _legacy_load(names: list[str], manager) -> dict:
    from lm_eval.tasks import get_task_dict

    return get_task_dict(names, manager)


def _legacy_leaves(nested: dict) -> Iterator[tuple[str, object]]:
    """(name, Task) of an older harness's nested task dict (groups map to dicts)."""
    for key, value in nested.items():
        if isinstance(value, dict):
            yield from _legacy_leaves(value)
        elif value is not None:
            yield (key if isinstance(key, str) else getattr(value, "task_name", str(key))), value


def download_tasks(tasks: str | list[str], include_path: Path | None = None) -> None:
    """Fetch the datasets of tasks into the Hugging Face cache (``HF_HOME``), for machines that
    will evaluate offline (``HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1``)."""
    loaded = load_tasks(tasks, include_path)
    from datasets import config as datasets_config

    print(f"datasets of {', '.join(loaded.names)} are in {datasets_config.HF_DATASETS_CACHE}")
    print("evaluate offline with the same HF_HOME and HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1")


def run_tasks(lm: PajamaLM, tasks: Tasks, limit: float | None = None, bootstrap_iters: int = BOOTSTRAP_ITERS, log_samples: bool = True) -> dict:
    """Evaluate loaded tasks with the harness's own evaluation loop and metrics; the same
    few-shot examples on every run (the harness's seeds)."""
    from lm_eval import evaluator

    if limit is not None and float(limit) >= 1:
        limit = int(limit)
    for task in tasks.leaves.values():  # the few-shot sampler draws again from its seed
        task.set_fewshot_seed(seed=SEEDS[2])
    with _seeded(), _environment(DISABLE_MULTIPROC="1"):  # bootstrap in this process (see BOOTSTRAP_ITERS)
        results = evaluator.evaluate(lm=lm, task_dict=tasks.loaded, limit=limit, bootstrap_iters=bootstrap_iters, log_samples=log_samples)
    results = dict(results)
    if tasks.summaries:
        results["summaries"] = summarise(results, tasks.summaries)
    return results


def summarise(results: dict, summaries: dict[str, dict[str, str]]) -> dict:
    """Per pajama group: each task's metric, as a percentage, and their average (TinyLlama's table)."""
    out = {}
    for group, chosen in summaries.items():
        values = {t: 100 * float(results["results"][t][f"{m},none"]) for t, m in chosen.items() if f"{m},none" in results["results"].get(t, {})}
        out[group] = {"metrics": chosen, "values": values, "average": sum(values.values()) / len(values) if len(values) == len(chosen) else None}
    return out


def flatten(results: dict) -> dict[str, float]:
    """``task/<task>/<metric>`` (``:<filter>`` after the metric unless the filter is none)
    and ``task/<group>/average`` of a pajama group: the numbers training logs."""
    out = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if filter_name and "_stderr" not in metric and isinstance(value, (int, float)):
                out[_column(task, metric, filter_name)] = float(value)
    for group, summary in results.get("summaries", {}).items():
        if summary["average"] is not None:
            out[f"task/{group}/average"] = summary["average"] / 100
    return out


# -- the command ------------------------------------------------------------------------


@torch.no_grad()
def evaluate_tasks(
    checkpoint: Path,
    tasks: str | list[str],
    num_fewshot: int | None = None,
    limit: float | None = None,
    batch_size: int = 16,
    include_path: Path | None = None,
    output_path: Path | None = None,
    tokenizer_path: Path | None = None,
    accelerator: str = "auto",
    precision: str | None = None,
) -> dict:
    """Evaluate a checkpoint on lm-evaluation-harness tasks; print a table, write the JSON.

    Returns the harness's results (with the per-example ``samples``); the JSON written (to
    ``output_path``, default ``<checkpoint>/lm_eval/results_<time>.json``) leaves them out.
    """
    import pajama.checkpoint as ckpt
    from pajama.generate import load_model
    from pajama.hardware import device_type
    from pajama.precision import choose_precision, compute_dtype

    if batch_size < 1:
        raise PajamaError(f"--batch_size must be >= 1, got {batch_size}")
    if limit is not None and not limit > 0:
        raise PajamaError(f"--limit must be positive (a number of examples, or a fraction below 1), got {limit}")
    if limit is not None and float(limit) >= 1:
        limit = int(limit)  # a number of examples (below 1: a fraction of them)
    if num_fewshot is not None and num_fewshot < 0:
        raise PajamaError(f"--num_fewshot must be >= 0, got {num_fewshot}")
    device = torch.device(device_type(accelerator))
    path = ckpt.resolve(Path(checkpoint))
    meta = ckpt.read_meta(path)
    tokenizer = ckpt.load_tokenizer_of(path, meta, tokenizer_path)  # before the weights: a missing tokenizer fails fast
    loaded = load_tasks(tasks, include_path, num_fewshot)
    model, meta = load_model(path, device)
    config = model.config
    if tokenizer.vocab_size > config.vocab_size:
        raise PajamaError(f"{tokenizer.path} has {tokenizer.vocab_size} tokens, more than the model's vocabulary of {config.vocab_size}: not this model's tokenizer")
    choice = choose_precision(precision, device.type, config, tokens=batch_size * config.block_size, backward=False)
    print(choice.reason + (f"\nwarning: {choice.warning}" if choice.warning else ""), file=sys.stderr)
    dtype = compute_dtype(choice.precision)
    if choice.precision.endswith("-true"):
        model = model.to(dtype)  # 16-bit weights, as training in that precision holds them
    lm = PajamaLM(model, config, tokenizer, device, batch_size=batch_size, autocast=dtype, cache_dtype=dtype)
    results = run_tasks(lm, loaded, limit=limit)
    if lm.truncation_note():
        print(lm.truncation_note())
    results["pajama"] = {
        "checkpoint": str(path), "step": meta.get("step"), "tokens": meta.get("tokens"), "tasks": task_names(tasks),
        "num_fewshot": num_fewshot, "limit": limit, "batch_size": batch_size, "precision": choice.precision, "device": str(device),
        "truncated_contexts": lm.truncated,
    }  # fmt: skip
    print(format_table(results))
    output = Path(output_path).expanduser() if output_path else path / "lm_eval" / f"results_{datetime.datetime.now():%Y-%m-%dT%H-%M-%S}.json"
    write_json(results, output)
    print(f"wrote {output}")
    return results


def write_json(results: dict, output: Path) -> None:
    """The results as the harness writes them (without the per-example samples)."""
    from lm_eval.utils import handle_non_serializable

    output.parent.mkdir(parents=True, exist_ok=True)
    kept = {k: v for k, v in results.items() if k != "samples"}
    write_atomic(output, json.dumps(kept, indent=2, default=handle_non_serializable, ensure_ascii=False).encode())


def format_table(results: dict) -> str:
    """The console table: task, metric, value, stderr, examples; then each pajama group's row."""
    info = results.get("pajama", {})
    lines = []
    if info:
        lines.append(f"{info['checkpoint']} (step {info['step']})" + (f", limit {info['limit']}" if info.get("limit") else ""))
    lines.append(f"{'task':<28}{'metric':<24}{'value':>9}{'stderr':>10}{'n-shot':>8}{'examples':>10}")
    for task, metrics in results["results"].items():
        shots = results.get("n-shot", {}).get(task, "")
        count = results.get("n-samples", {}).get(task, {}).get("effective", "")
        first = True
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if not filter_name or "_stderr" in metric or not isinstance(value, (int, float)):
                continue
            stderr = metrics.get(f"{metric}_stderr,{filter_name}", "")
            stderr = _number(stderr) if isinstance(stderr, (int, float)) else str(stderr)
            label = metric if filter_name == "none" else f"{metric} ({filter_name})"
            lines.append(f"{task if first else '':<28}{label:<24}{_number(value):>9}{stderr:>10}{str(shots) if first else '':>8}{str(count) if first else '':>10}")
            first = False
    for group, summary in results.get("summaries", {}).items():
        chosen, values = summary["metrics"], summary["values"]
        lines.append(f"{group}: " + " | ".join(f"{t} {chosen[t]} {values[t]:.2f}" for t in chosen if t in values))
        if summary["average"] is not None:
            lines.append(f"{group}: average {summary['average']:.2f}")
    return "\n".join(lines)


def _number(value: float) -> str:
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"  # perplexities can be huge
