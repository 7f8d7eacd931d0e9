"""lm-evaluation-harness tasks on pajama checkpoints: pajama's adapter gives the per-example
log-likelihoods, accuracies and generations of the harness's own Hugging Face model (HFLM)
on the export, for both kinds of tokenizer and a grouped-query, tied shape; in-loop task
evaluation on two FSDP processes logs what a run afterwards on that step's checkpoint gives;
clear errors. Tasks are small YAML files in the harness's format over local JSON files, and
nothing touches the network."""

import csv
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# Offline for the whole session: a task here that wanted the network would fail, not download.
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("transformers")

from pajama import PajamaError
from pajama.evaluation import evaluate
from pajama.evaluation.harness import check_tasks, evaluate_tasks
from pajama.hf import export
from pajama.prepare import prepare
from pajama.training import TrainConfig, pretrain

TASKS = ["pajama_mc", "pajama_ll", "pajama_gen", "pajama_ppl"]
TINY = {"model_name": "tiny", "block_size": 64, "batch_size": 8, "micro_batch_size": 4, "warmup_iters": 5, "learning_rate": 3e-3, "eval_iters": 1,
        "accelerator": "cpu", "precision": "32-true", "val_fraction": 0.0}  # fmt: skip


def sentences(texts: list[str], count: int) -> list[tuple[str, str]]:
    """(first words, the rest) of the first lines of docstrings the model was trained on."""
    out = []
    for text in texts:
        words = text.split("\n", 1)[0].split()
        if 6 <= len(words) <= 14:
            half = len(words) // 2
            out.append((" ".join(words[:half]), " " + " ".join(words[half:])))
        if len(out) == count:
            break
    return out


MEAN = {"aggregation": "mean", "higher_is_better": True}


def write_tasks(directory: Path, texts: list[str]) -> Path:
    """Four tasks in the harness's YAML format over JSON-lines files: multiple choice,
    log-likelihood of a target, generation until a stop string, and rolling log-likelihood
    (perplexity). Their datasets are cached under ``directory``."""
    rng = random.Random(0)
    pairs = sentences(texts, 24)
    mc, ll, gen, ppl = [], [], [], []
    for i, (context, rest) in enumerate(pairs):
        others = []
        while len(others) < 3:  # the same words in another order: a language model should prefer the text's
            words = rest.split()
            rng.shuffle(words)
            if " " + " ".join(words) not in (rest, *others):
                others.append(" " + " ".join(words))
        label = rng.randrange(4)
        choices = others[:label] + [rest] + others[label:]
        mc.append({"context": context, "choices": choices, "label": label})
        ll.append({"context": context, "continuation": " " + rest.split()[0]})
        gen.append({"context": context, "answer": rest.split()[0]})
        ppl.append({"text": context + rest})
    mc.append({"context": " ".join(["a long context"] * 40), "choices": [" one", " two words"], "label": 0})  # longer than the model's context
    directory.mkdir(parents=True)
    common = {"dataset_path": "json", "test_split": "test"}
    specs = {
        "pajama_mc": (mc, {"output_type": "multiple_choice", "doc_to_text": "{{context}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{label}}",
                           "metric_list": [{"metric": "acc", **MEAN}, {"metric": "acc_norm", **MEAN}]}),
        "pajama_ll": (ll, {"output_type": "loglikelihood", "doc_to_text": "{{context}}", "doc_to_target": "{{continuation}}",
                           "metric_list": [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False}, {"metric": "acc", **MEAN}]}),
        "pajama_gen": (gen, {"output_type": "generate_until", "doc_to_text": "{{context}}", "doc_to_target": "{{answer}}",
                             "generation_kwargs": {"until": ["\n", "."], "max_gen_toks": 10, "do_sample": False},
                             "metric_list": [{"metric": "exact_match", **MEAN}]}),
        "pajama_ppl": (ppl, {"output_type": "loglikelihood_rolling", "doc_to_text": "", "doc_to_target": "{{text}}",
                             "metric_list": [{"metric": "word_perplexity", "aggregation": "weighted_perplexity", "higher_is_better": False},
                                             {"metric": "bits_per_byte", "aggregation": "bits_per_byte", "higher_is_better": False}]}),
    }  # fmt: skip
    for name, (docs, spec) in specs.items():
        data = directory / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        config = {"task": name, **common, "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(directory / "cache")}, **spec}
        (directory / f"{name}.yaml").write_text(json.dumps(config))  # JSON is YAML
    return directory


def train(root: Path, tokenizer: Path, texts: list[str], steps: int, **overrides) -> Path:
    """A tiny model trained on ``texts`` for ``steps``: its run directory."""
    corpus = root / "corpus" / "arxiv"
    corpus.mkdir(parents=True)
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    prepare(root / "corpus", tokenizer, root / "data", chunk_size=4096, num_workers=1)
    config = TrainConfig(train_data_dir=root / "data", out_dir=root / "run", max_iters=steps, save_interval=steps, eval_interval=steps, **TINY, **overrides)
    pretrain(config)
    return root / "run"


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory, stdlib_texts) -> Path:
    return write_tasks(tmp_path_factory.mktemp("tasks") / "tasks", stdlib_texts)


SHAPES = {
    # LLaMA's: SentencePiece, multi-head attention, separate output head.
    "sentencepiece": {},
    # Llama 3.2's: tokenizer.json, grouped-query attention, tied embeddings, Llama 3 rotary scaling.
    "huggingface-gqa-tied": {"model_overrides": {"n_head": 4, "n_kv_head": 1, "tie_embeddings": True, "rope_base": 500000.0,
                                                 "rope_scaling_factor": 32.0, "rope_original_context": 32}},
}  # fmt: skip


@pytest.fixture(scope="module", params=list(SHAPES))
def trained(request, tmp_path_factory, stdlib_texts, tokenizer_model, hf_tokenizer_json):
    """(run directory, its export) of a tiny model trained on the texts the tasks come from."""
    root = tmp_path_factory.mktemp(request.param)
    tokenizer = tokenizer_model if request.param == "sentencepiece" else hf_tokenizer_json
    run = train(root, tokenizer, stdlib_texts, 400, **SHAPES[request.param])
    export(run, root / "export")
    return request.param, run, root / "export"


def by_doc(samples: list[dict]) -> list[dict]:
    return sorted(samples, key=lambda s: s["doc_id"])


def test_pajama_gives_the_numbers_of_the_harness_hf_model_on_the_export(trained, tasks_dir, tmp_path, capsys):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    kind, run, exported = trained
    fewshot = None if kind == "sentencepiece" else 2  # few-shot: the same examples drawn on both paths
    tasks = TASKS[:3]
    ours = evaluate_tasks(run, ",".join(tasks), num_fewshot=fewshot, batch_size=3, include_path=tasks_dir, output_path=tmp_path / "results.json",
                          accelerator="cpu", precision="32-true")  # fmt: skip
    # The harness's own path on the export. A tokenizer.json adds BOS only if its post-processor
    # says so (this one's does not): add_bos_token=True makes HFLM's tokenizer add it, as
    # pajama's training documents begin with it. The exported SentencePiece tokenizer adds it anyway.
    hf = HFLM(pretrained=str(exported), device="cpu", batch_size=5, dtype="float32", add_bos_token=True)
    theirs = lm_eval.simple_evaluate(
        model=hf, tasks=tasks, num_fewshot=fewshot, task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False), bootstrap_iters=0
    )  # no standard errors: the harness bootstraps in forked processes
    for task in tasks:
        a, b = by_doc(ours["samples"][task]), by_doc(theirs["samples"][task])
        assert [s["doc_id"] for s in a] == [s["doc_id"] for s in b] and len(a) >= 24
        assert [s["arguments"] for s in a] == [s["arguments"] for s in b]  # the same prompts, few-shot examples included
        for x, y in zip(a, b):
            for ours_resp, their_resp in zip(x["resps"], y["resps"]):
                if task == "pajama_gen":
                    assert ours_resp == their_resp, (x["arguments"], ours_resp, their_resp)
                else:
                    (ll, greedy), (their_ll, their_greedy) = ours_resp[0], their_resp[0]
                    assert ll == pytest.approx(their_ll, rel=1e-4, abs=1e-5) and greedy == their_greedy
        for metric, value in theirs["results"][task].items():
            if isinstance(value, float) and "stderr" not in metric:
                assert ours["results"][task][metric] == pytest.approx(value, rel=1e-4 if "perplexity" in metric else 1e-9), (task, metric)
    # Trained on these texts: the true continuation wins more often than chance (1 in 4).
    assert ours["results"]["pajama_mc"]["acc,none"] > 0.3
    assert any(s["resps"][0][0] for s in ours["samples"]["pajama_gen"])  # something generated
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["results"]["pajama_mc"]["acc,none"] == ours["results"]["pajama_mc"]["acc,none"] and "samples" not in written
    table = capsys.readouterr().out
    assert "pajama_mc" in table and "acc_norm" in table and "exact_match" in table


def test_rolling_log_likelihood_conditions_on_bos_once(trained, tasks_dir, tmp_path):
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    kind, run, exported = trained
    ours = evaluate_tasks(run, "pajama_ppl", include_path=tasks_dir, output_path=tmp_path / "r.json", accelerator="cpu", precision="32-true")
    # HFLM encodes the text with the tokenizer's special tokens and prefixes BOS as well: with
    # a tokenizer that adds none itself (this tokenizer.json), that is BOS once, as pajama does.
    hf = HFLM(pretrained=str(exported), device="cpu", batch_size=4, dtype="float32")
    theirs = lm_eval.simple_evaluate(
        model=hf, tasks=["pajama_ppl"], task_manager=TaskManager(include_path=str(tasks_dir), include_defaults=False), bootstrap_iters=0
    )  # no standard errors: the harness bootstraps in forked processes
    a, b = by_doc(ours["samples"]["pajama_ppl"]), by_doc(theirs["samples"]["pajama_ppl"])
    if kind == "sentencepiece":
        # The exported SentencePiece tokenizer adds BOS, so HFLM scores BOS, BOS, text: one more
        # (unlikely) token than the text (lm-evaluation-harness issue #3333). pajama does not.
        assert all(x["resps"][0][0] > y["resps"][0][0] for x, y in zip(a, b))
    else:
        for x, y in zip(a, b):
            assert x["resps"][0][0] == pytest.approx(y["resps"][0][0], rel=1e-4)
        assert ours["results"]["pajama_ppl"]["word_perplexity,none"] == pytest.approx(theirs["results"]["pajama_ppl"]["word_perplexity,none"], rel=1e-4)


def rows(run_dir: Path) -> dict[int, dict]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return {int(r["step"]): r for r in csv.DictReader(f)}


def test_in_loop_tasks_on_two_fsdp_processes_log_what_a_run_afterwards_gives(tasks_dir, tmp_path, stdlib_texts, tokenizer_model):
    corpus = tmp_path / "corpus" / "arxiv"
    corpus.mkdir(parents=True)
    (corpus / "docs.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in stdlib_texts))
    prepare(tmp_path / "corpus", tokenizer_model, tmp_path / "data", chunk_size=4096, num_workers=1)
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "pajama.cli", "pretrain", "--train_data_dir", tmp_path / "data", "--model_name", "tiny", "--block_size", "64",
        "--batch_size", "8", "--micro_batch_size", "2", "--max_iters", "6", "--eval_interval", "3", "--save_interval", "3", "--keep_last", "0",
        "--warmup_iters", "2", "--learning_rate", "3e-3", "--val_fraction", "0", "--accelerator", "cpu", "--precision", "32-true",
        "--devices", "2", "--strategy", "fsdp", "--eval_tasks", "pajama_mc,pajama_gen", "--eval_task_include_path", tasks_dir,
        "--eval_task_limit", "9", "--out_dir", out,
    ]  # fmt: skip
    result = subprocess.run(list(map(str, command)), capture_output=True, text=True, check=False, env={**os.environ, "HF_HOME": str(tmp_path / "hf")})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "tasks: pajama_mc/acc" in result.stdout  # the console line
    logged = rows(out)
    assert sorted(s for s, r in logged.items() if r["task/pajama_mc/acc"]) == [0, 3, 6]  # before training, then every eval_interval
    assert all(float(logged[s]["eval_task_time"]) > 0 for s in (0, 3, 6))
    for step in (3, 6):
        after = evaluate_tasks(out / "checkpoints" / f"step-{step:08d}", "pajama_mc,pajama_gen", limit=9, include_path=tasks_dir,
                               output_path=tmp_path / f"{step}.json", accelerator="cpu", precision="32-true")  # fmt: skip
        assert after["n-samples"]["pajama_mc"]["effective"] == 9
        for column, (task, metric) in {"task/pajama_mc/acc": ("pajama_mc", "acc"), "task/pajama_mc/acc_norm": ("pajama_mc", "acc_norm"),
                                       "task/pajama_gen/exact_match": ("pajama_gen", "exact_match")}.items():  # fmt: skip
            assert float(logged[step][column]) == after["results"][task][f"{metric},none"], (step, column)


def test_in_loop_evaluation_logs_group_aggregates_and_says_what_was_cut(tasks_dir, tmp_path, stdlib_texts, tokenizer_model, capsys):
    """A harness group (here of two local tasks, as mmlu is of its subjects) gets its aggregate
    in metrics.csv beside its tasks' metrics; the contexts cut to fit the model are counted, in
    training (once) as after it."""
    group = tmp_path / "group"
    group.mkdir()
    for name in ("pajama_mc", "pajama_ll"):
        (group / f"{name}.yaml").write_text((tasks_dir / f"{name}.yaml").read_text())
    spec = {"group": "pajama_group", "task": ["pajama_mc", "pajama_ll"], "aggregate_metric_list": [{"metric": "acc", "aggregation": "mean", "weight_by_size": True}]}
    (group / "pajama_group.yaml").write_text(json.dumps(spec))
    run = train(tmp_path, tokenizer_model, stdlib_texts, 2, eval_tasks="pajama_group", eval_task_include_path=group)
    out = capsys.readouterr().out
    cut = "note: 1 context(s) longer than the model's context of 64 tokens were cut from the left"  # pajama_mc's long one, of two choices
    assert out.count(cut) == 1
    logged = rows(run)
    for step in (0, 2):
        mc, ll = float(logged[step]["task/pajama_mc/acc"]), float(logged[step]["task/pajama_ll/acc"])
        assert float(logged[step]["task/pajama_group/acc"]) == pytest.approx((25 * mc + 24 * ll) / 49)  # weighted by examples
    after = evaluate_tasks(run, "pajama_group", include_path=group, output_path=tmp_path / "after.json", accelerator="cpu", precision="32-true")
    assert cut in capsys.readouterr().out and after["pajama"]["truncated_contexts"] == 1
    assert float(logged[2]["task/pajama_group/acc"]) == after["results"]["pajama_group"]["acc,none"]


def write_random_checkpoint(directory: Path, tokenizer=None, **shape) -> Path:
    """A checkpoint in pajama's layout holding a random tiny model (and the tokenizer, if given)."""
    from dataclasses import asdict

    import torch

    from pajama import checkpoint
    from pajama.model import LLaMA
    from pajama.model_config import ModelConfig

    model = LLaMA(ModelConfig("tiny", n_layer=1, n_head=2, n_embd=32, vocab_size=1000, block_size=64).replace(**shape))
    model.init_weights(0)
    directory.mkdir(parents=True)
    meta = {"model": asdict(model.config), "tokenizer_sha256": tokenizer.sha256 if tokenizer else None, "step": 1, "tokens": 64, "train": {}, "data": {}}
    (directory / checkpoint.META).write_text(json.dumps(meta))
    torch.save({"model": model.state_dict()}, directory / checkpoint.STATE)
    if tokenizer is not None:
        tokenizer.copy_to(directory)
    return directory


class _HostReads(torch.overrides.TorchFunctionMode):
    """Counts the reads of tensor values into Python (each a wait for the device on a GPU)."""

    READS = frozenset({"__bool__", "__float__", "__int__", "__index__", "item", "tolist", "numpy"})

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def test_log_likelihoods_normalise_only_the_continuations_and_read_back_once(tokenizer):
    """The scores of the plain computation (log-softmax over every position, one request at a
    time), from logits made at the continuations' positions only, and one read of the results
    for all the requests, not one per request."""
    from pajama.evaluation.harness import PajamaLM
    from pajama.model import LLaMA
    from pajama.model_config import ModelConfig

    model = LLaMA(ModelConfig("tiny", n_layer=2, n_head=4, n_embd=32, n_kv_head=2, vocab_size=tokenizer.vocab_size, block_size=64))
    model.init_weights(3)
    model.eval()
    rng = random.Random(0)
    requests = []
    for _ in range(11):
        context = [tokenizer.bos_id] + [rng.randrange(3, tokenizer.vocab_size) for _ in range(rng.randrange(0, 90))]  # some longer than the context
        requests.append((None, context, [rng.randrange(3, tokenizer.vocab_size) for _ in range(rng.randrange(1, 6))]))
    greedy = [tokenizer.bos_id, 5, 9]
    with torch.no_grad():
        greedy.append(int(model(torch.tensor([greedy]))[0, -1].argmax()))
    requests.append((None, greedy[:-1], greedy[-1:]))  # a continuation that is the most likely token
    lm = PajamaLM(model, model.config, tokenizer, torch.device("cpu"), batch_size=4, progress=False)
    shapes = []
    model.register_forward_hook(lambda module, args, output: shapes.append(tuple(output.shape)))
    with _HostReads() as reads:
        scores = lm._loglikelihood_tokens(requests)
    assert reads.count == 1
    assert len(shapes) == 3 and all(shape[1] <= 5 for shape in shapes)  # logits (batch, its longest continuation, vocab)
    expected = []
    with torch.no_grad():
        for _, context, continuation in requests:
            whole = (context + continuation)[-65:]
            logprobs = torch.log_softmax(model(torch.tensor([whole[:-1]])).float(), -1)[0, -len(continuation) :]
            target = torch.tensor(continuation)
            expected.append((float(logprobs.gather(-1, target[:, None]).sum()), bool((logprobs.argmax(-1) == target).all())))
    assert [g for _, g in scores] == [g for _, g in expected] and scores[-1][1]
    assert [ll for ll, _ in scores] == pytest.approx([ll for ll, _ in expected], rel=1e-5)
    assert lm.truncated == sum(len(c) + len(x) > 65 for _, c, x in requests) > 0


def test_clear_errors(tasks_dir, tmp_path, tokenizer):
    with pytest.raises(PajamaError, match=r"unknown task 'pajama_mcc'.*did you mean pajama_mc"):
        check_tasks("pajama_mcc", tasks_dir)
    with pytest.raises(PajamaError, match=r"unknown task 'hellaswg'.*did you mean hellaswag"):
        check_tasks("hellaswg")
    with pytest.raises(PajamaError, match="written for chat models.*try arc_challenge"):
        check_tasks("arc_challenge_chat")
    with pytest.raises(PajamaError, match="--include_path .*: not found"):
        check_tasks("pajama_mc", tmp_path / "nowhere")
    alone = write_random_checkpoint(tmp_path / "no-tokenizer", tokenizer=None)
    with pytest.raises(PajamaError, match="no tokenizer kept with the checkpoint"):
        evaluate_tasks(alone, "pajama_mc", include_path=tasks_dir, accelerator="cpu", precision="32-true")
    # A generative task that wants more new tokens than the model's whole context.
    long = tmp_path / "long"
    long.mkdir()
    spec = json.loads((tasks_dir / "pajama_gen.yaml").read_text())
    spec["task"], spec["generation_kwargs"]["max_gen_toks"] = "pajama_long_gen", 100
    (long / "long.yaml").write_text(json.dumps(spec))
    ckpt = write_random_checkpoint(tmp_path / "random", tokenizer=tokenizer)
    with pytest.raises(PajamaError, match="pajama_long_gen generates up to 100 tokens; the model's context is 64"):
        evaluate_tasks(ckpt, "pajama_long_gen", include_path=long, accelerator="cpu", precision="32-true", output_path=tmp_path / "r.json")
    with pytest.raises(PajamaError, match="give --data_dir .* --tasks"):
        evaluate(ckpt)
    with pytest.raises(PajamaError, match="--download_only fetches the datasets of --tasks"):
        evaluate(data_dir=tmp_path, download_only=True)


def test_lm_eval_is_needed_only_for_tasks(tmp_path, tokenizer):
    # A stand-in lm_eval first on the path: it records that it was imported, then fails as a missing one would.
    fake = tmp_path / "fake" / "lm_eval"
    fake.mkdir(parents=True)
    record = tmp_path / "imported"
    (fake / "__init__.py").write_text(f"open({str(record)!r}, 'a').write('x')\nraise ImportError('No module named lm_eval')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), os.environ.get("PYTHONPATH")]))}

    def pajama(*args):
        return subprocess.run([sys.executable, "-m", "pajama.cli", *map(str, args)], capture_output=True, text=True, env=env, check=False)

    for command in (["evaluate", "--help"], ["pretrain", "--help"]):
        assert pajama(*command).returncode == 0
    assert not record.exists()
    ckpt = write_random_checkpoint(tmp_path / "ckpt", tokenizer=tokenizer)
    result = pajama("evaluate", "--checkpoint", ckpt, "--tasks", "hellaswag")
    assert result.returncode == 1 and "pip install 'pajama[eval]'" in result.stderr and "Traceback" not in result.stderr
    result = pajama("pretrain", "--train_data_dir", tmp_path, "--eval_tasks", "hellaswag")
    assert result.returncode == 1 and "pip install 'pajama[eval]'" in result.stderr


def test_tinyllama_group_and_summary():
    from pajama.evaluation.harness import TINYLLAMA, format_table, summarise

    _, names, _ = check_tasks("tinyllama")
    assert names == ["hellaswag", "openbookqa", "winogrande", "arc_challenge", "arc_easy", "boolq", "piqa"]
    # TinyLlama's published row for its step-50K checkpoint (103B tokens), as the harness would report it.
    published = {"hellaswag": 0.4350, "openbookqa": 0.2980, "winogrande": 0.5328, "arc_challenge": 0.2432, "arc_easy": 0.4491, "boolq": 0.5966, "piqa": 0.6730}
    results = {"results": {t: {"acc,none": 0.0, f"{m},none": published[t]} for t, m in TINYLLAMA.items()}}
    results["summaries"] = summarise(results, {"tinyllama": TINYLLAMA})
    assert results["summaries"]["tinyllama"]["average"] == pytest.approx(100 * sum(published.values()) / 7)
    assert "tinyllama: average 46.11" in format_table(results)  # as published


def test_plot_draws_task_curves(tmp_path):
    pytest.importorskip("matplotlib")
    from pajama.metrics import COLUMNS
    from pajama.plot import plot

    columns = COLUMNS + ["task/hellaswag/acc", "task/hellaswag/acc_norm", "eval_task_time"]
    with open(tmp_path / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for step in range(31):
            row = {"step": step, "tokens": step * 512, "loss": 6.0 - step * 0.05, "lr": 1e-3, "tokens_per_sec": 4000}
            if step % 10 == 0:
                row |= {"task/hellaswag/acc": 0.25 + step / 1000, "task/hellaswag/acc_norm": 0.26 + step / 900, "eval_task_time": 3.0}
            writer.writerow(row)
    out = plot(tmp_path)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
