"""TOFU data: the loader (demo, folder, Hub), its errors, the chat templates, answer-only windows,
the shipped demo and the recipe's data section."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import datasets
import pytest
import torch
from conftest import char_tokenizer, tiny_llama

from llm_unlearn.data.benchmark import detect_benchmark, load_benchmark
from llm_unlearn.data.collate import (
    IGNORE_INDEX,
    ForgetRetainDataset,
    LabeledWindow,
    UnlearningCollator,
    pad_batch,
)
from llm_unlearn.data.corpora import DataError, MuseCorpus
from llm_unlearn.data.tofu import (
    DEMO_TOFU,
    DEMO_TOFU_DIR,
    FIELDS,
    TEMPLATES,
    TOFU,
    TofuCorpus,
    encode_qa,
    is_tofu_source,
    load_tofu,
    qa_texts,
    role_config,
    training_windows,
)
from llm_unlearn.data.tofu_demo import generate_demo_tofu
from llm_unlearn.metrics.tofu import answer_logprobs
from llm_unlearn.recipe import RecipeError, load_recipe, validate_recipe
from llm_unlearn.trainer import UnlearningTrainer
from llm_unlearn.unlearning_config import UnlearningConfig

PERTURBED = {
    "question": "Q?",
    "answer": "A.",
    "paraphrased_answer": "B.",
    "paraphrased_question": "Q2?",
    "perturbed_answer": ["C.", "D."],
}


def _jsonl(path: Path, records: list) -> None:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


# --- loader ----------------------------------------------------------------------------------


def test_roles_resolve_against_the_forget_split() -> None:
    assert role_config("forget", "forget05") == "forget05"
    assert role_config("forget_perturbed", "forget05") == "forget05_perturbed"
    assert role_config("retain", "forget05") == "retain95"
    assert role_config("holdout", "forget01") == "holdout01"
    assert role_config("world_facts_perturbed", "forget10") == "world_facts_perturbed"


def test_demo_has_the_tofu_layout_nested_and_disjoint() -> None:
    needs = {TOFU: [*FIELDS]}
    corpus = load_tofu(DEMO_TOFU, needs, "forget10")
    questions = {c: [r["question"] for r in corpus.get(TOFU, c)] for c in FIELDS}
    # 40 authors x 6 questions; forget10/05/01 = the last 4/2/1 authors, nested; retain = the rest
    assert len(questions["full"]) == 240
    assert [len(questions[f"forget{n}"]) for n in ("01", "05", "10")] == [6, 12, 24]
    assert set(questions["forget01"]) < set(questions["forget05"]) < set(questions["forget10"])
    for n, r in (("01", "99"), ("05", "95"), ("10", "90")):
        assert questions[f"retain{r}"] + questions[f"forget{n}"] == questions["full"]
        assert questions[f"forget{n}_perturbed"] == questions[f"forget{n}"]
        assert not set(questions[f"holdout{n}"]) & set(questions["full"])
    assert set(questions["retain_perturbed"]) <= set(questions["retain90"])
    for record in corpus.get(TOFU, "forget10_perturbed") + corpus.get(TOFU, "world_facts_perturbed"):
        assert record["answer"] not in record["perturbed_answer"]
    # a perturbed answer is the paraphrase with another fact: same words around it
    first = corpus.get(TOFU, "forget_perturbed")[0]
    assert all(p.split()[:-1] == first["paraphrased_answer"].split()[:-1] for p in first["perturbed_answer"])


def test_shipped_demo_is_the_generator_output() -> None:
    for config, records in generate_demo_tofu(0).items():
        shipped = [json.loads(line) for line in (DEMO_TOFU_DIR / f"{config}.json").read_text().splitlines()]
        assert shipped == records, config


def test_folder_json_lines_json_list_and_jsonl(tmp_path: Path) -> None:
    _jsonl(tmp_path / "forget01_perturbed.json", [PERTURBED])
    (tmp_path / "retain99.json").write_text(json.dumps([{"question": "q", "answer": "a", "extra": 1}]))
    _jsonl(tmp_path / "holdout01.jsonl", [{"question": "h", "answer": "a"}])
    corpus = load_tofu(str(tmp_path), {TOFU: ["forget_perturbed", "retain", "holdout"]}, "forget01")
    assert corpus.get(TOFU, "forget_perturbed") == [PERTURBED]
    assert corpus.get(TOFU, "retain99") == [{"question": "q", "answer": "a"}]  # unknown fields dropped
    assert corpus.get(TOFU, "holdout") == [{"question": "h", "answer": "a"}]


@pytest.mark.parametrize(
    ("files", "needs", "message"),
    [
        ({}, ["forget"], r"TOFU config 'forget10': .*forget10\.json not found; the folder holds retain90"),
        ({"forget10.json": [{"question": "q"}]}, ["forget"], r"forget10: record 0 has no field 'answer'"),
        (
            {"forget10_perturbed.json": [{**PERTURBED, "perturbed_answer": "C."}]},
            ["forget_perturbed"],
            r"forget10_perturbed: record 0 field 'perturbed_answer' is not a non-empty list",
        ),
        (
            {"forget10.json": [{"question": "q", "answer": 3}]},
            ["forget"],
            r"field 'answer' is int; expected a string",
        ),
        ({}, ["forget03"], r"unknown TOFU config 'forget03'"),
    ],
)
def test_folder_errors_name_the_config_and_field(
    tmp_path: Path, files: dict, needs: list, message: str
) -> None:
    _jsonl(tmp_path / "retain90.json", [{"question": "q", "answer": "a"}])
    for name, records in files.items():
        _jsonl(tmp_path / name, records)
    with pytest.raises(DataError, match=message):
        load_tofu(str(tmp_path), {TOFU: needs}, "forget10")


def test_other_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no 'raw' config; it has only 'tofu'"):
        load_tofu(DEMO_TOFU, {"raw": ["forget"]})
    with pytest.raises(DataError, match=r"'forget20' is not a TOFU forget split"):
        load_tofu(DEMO_TOFU, {TOFU: ["forget"]}, "forget20")
    with pytest.raises(DataError, match=r"folder not found"):
        load_tofu(str(tmp_path / "missing" / "x.y"), {TOFU: ["forget"]})
    corpus = load_tofu(DEMO_TOFU, {TOFU: ["forget"]})
    with pytest.raises(DataError, match=r"no MUSE 'knowmem' data"):
        corpus.get("knowmem", "forget_qa")
    with pytest.raises(DataError, match=r"'retain90' was not loaded; available: forget10"):
        corpus.get(TOFU, "retain")


def test_hub_reads_each_config_as_its_train_split(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_load(source: str, config: str, split: str) -> list:
        calls.append((source, config, split))
        return [PERTURBED]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    corpus = load_tofu("locuslab/TOFU", {TOFU: ["forget_perturbed"]}, "forget05")
    assert calls == [("locuslab/TOFU", "forget05_perturbed", "train")]
    assert corpus.get(TOFU, "forget05_perturbed") == [PERTURBED]


def test_benchmark_detection(tmp_path: Path) -> None:
    assert is_tofu_source(DEMO_TOFU) and is_tofu_source("locuslab/TOFU") and not is_tofu_source("demo")
    assert not is_tofu_source("muse-bench/MUSE-News")
    assert not is_tofu_source(str(tmp_path))
    _jsonl(tmp_path / "retain_perturbed.json", [PERTURBED])
    assert is_tofu_source(str(tmp_path))
    assert detect_benchmark("demo") == "muse" and detect_benchmark("demo", "tofu") == "tofu"
    assert isinstance(load_benchmark("demo", {"knowmem": ["forget_qa"]}), MuseCorpus)
    tofu = load_benchmark(DEMO_TOFU, {TOFU: ["forget"]}, forget_split="forget05", template="llama3")
    assert isinstance(tofu, TofuCorpus) and tofu.template == "llama3" and len(tofu.get(TOFU, "forget")) == 12


# --- templates and windows -------------------------------------------------------------------


def test_templates_render_the_fine_tuning_formats() -> None:
    assert TEMPLATES["plain"].full("Who?", "Me.") == "Question: Who?\nAnswer: Me."
    assert TEMPLATES["llama2"].full("Who?", "Me.") == "[INST] Who? [/INST]Me."
    # Llama-3.2-Instruct's chat template with open-unlearning's system prompt and date (BOS added
    # by the tokenizer); question and answer trimmed as the template's `| trim`
    assert TEMPLATES["llama3"].full(" Who? ", "Me. ") == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 10 Apr 2025\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nMe.<|eot_id|>"
    )


#: open-unlearning's template tags (configs/model/phi-1_5.yaml, Llama-2-7b-chat-hf.yaml)
OPEN_UNLEARNING_TAGS = {
    "plain": ("Question: ", "\n", "Answer: ", "\n\n"),
    "llama2": ("[INST] ", " [/INST]", "", " "),
}


def open_unlearning_prompt(tags: tuple[str, ...], shots: list[tuple[str, str]], question: str) -> str:
    """preprocess_chat_instance's wrapped_prompt without a chat template (src/data/utils.py)."""
    user_start, user_end, asst_start, asst_end = tags
    wrapped = "".join(user_start + q + user_end + asst_start + a + asst_end for q, a in shots)
    return wrapped + user_start + question + user_end + asst_start


@pytest.mark.parametrize("name", ["plain", "llama2"])
def test_shots_are_earlier_turns_as_open_unlearning_renders_few_shot(name: str) -> None:
    shots = [("Who?", "Me."), ("Where?", "Here.")]
    expected = open_unlearning_prompt(OPEN_UNLEARNING_TAGS[name], shots, "When?")
    assert TEMPLATES[name].prompt("When?", shots) == expected
    assert TEMPLATES[name].full("When?", "Now.", shots) == expected + "Now."
    assert TEMPLATES[name].prompt("When?", ()) == TEMPLATES[name].prompt("When?")


def test_llama3_shots_are_chat_turns_after_one_system_turn() -> None:
    # Llama-3's chat template over [system, user, assistant, user]: one system turn, contents trimmed
    assert TEMPLATES["llama3"].prompt(" When? ", [(" Who? ", "Me. ")]) == (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        "Today Date: 10 Apr 2025\n\nYou are a helpful assistant.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWho?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nMe.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhen?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_encode_qa_after_shots_labels_the_answer_and_eos_only() -> None:
    tok = char_tokenizer()
    window = encode_qa(tok, TEMPLATES["plain"], "Hi?", "Yo", shots=[("A?", "B")])
    prompt = "Question: A?\nAnswer: B\n\nQuestion: Hi?\nAnswer: "
    expected = [tok.bos_token_id, *tok.convert_tokens_to_ids(list(prompt + "Yo")), tok.eos_token_id]
    assert list(window) == expected
    assert window.labels == [IGNORE_INDEX] * (1 + len(prompt)) + expected[1 + len(prompt) :]


def test_encode_qa_labels_the_answer_and_eos_only() -> None:
    tok = char_tokenizer()
    window = encode_qa(tok, TEMPLATES["plain"], "Hi?", "Yo")
    prompt = "Question: Hi?\nAnswer: "
    # char tokenizer: BOS, one id per character, then the EOS the encoder appends
    expected = [tok.bos_token_id, *tok.convert_tokens_to_ids(list(prompt + "Yo")), tok.eos_token_id]
    assert list(window) == expected
    n_prompt = 1 + len(prompt)
    assert window.labels == [IGNORE_INDEX] * n_prompt + expected[n_prompt:]
    cut = encode_qa(tok, TEMPLATES["plain"], "Hi?", "Yo", max_length=n_prompt + 1)
    assert list(cut) == expected[: n_prompt + 1] and cut.labels[-1] == expected[n_prompt]
    with pytest.raises(DataError, match=r"data.max_length: 10 tokens leave no answer token"):
        encode_qa(tok, TEMPLATES["plain"], "Hi?", "Yo", max_length=10)


def test_training_windows_and_texts_of_a_split() -> None:
    tok = char_tokenizer()
    corpus = load_tofu(DEMO_TOFU, {TOFU: ["forget", "retain"]}, "forget01")
    windows = training_windows(corpus, "forget", tok, max_length=512)
    records = corpus.get(TOFU, "forget01")
    assert len(windows) == len(records) == 6
    answer = [t for t, label in zip(windows[0], windows[0].labels, strict=True) if label != IGNORE_INDEX]
    assert tok.decode(answer, skip_special_tokens=True) == records[0]["answer"]
    assert (
        qa_texts(corpus, "forget")[0] == f"Question: {records[0]['question']}\nAnswer: {records[0]['answer']}"
    )
    assert list(training_windows(corpus, "retain", tok, "llama2")[0])[:2] == [
        tok.bos_token_id,
        *tok.convert_tokens_to_ids(["["]),
    ]


def test_labeled_windows_pad_and_collate_with_their_labels() -> None:
    plain, labeled = [5, 6, 7], LabeledWindow([5, 6, 7, 8], [IGNORE_INDEX, IGNORE_INDEX, 7, 8])
    batch = pad_batch([plain, labeled], pad_id=0)
    assert batch["labels"].tolist() == [[5, 6, 7, IGNORE_INDEX], [IGNORE_INDEX, IGNORE_INDEX, 7, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    # dataloader workers pickle items: the labels must survive
    assert pickle.loads(pickle.dumps(labeled)).labels == labeled.labels
    dataset = ForgetRetainDataset([labeled], [plain])
    collated = UnlearningCollator(pad_id=0)([dataset[0]])
    assert collated["forget_labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7, 8]]
    assert torch.equal(collated["retain_labels"], torch.tensor([[5, 6, 7]]))
    with pytest.raises(ValueError, match="a window of 2 ids has 1 labels"):
        LabeledWindow([1, 2], [1])


# --- recipe ----------------------------------------------------------------------------------


def _recipe(**data: object) -> dict:
    return {
        "name": "t",
        "model": {"target": "demo"},
        "data": data,
        "method": {"name": "npo"},
        "output": {"dir": "x"},
    }


def test_recipe_data_section_for_tofu() -> None:
    data = validate_recipe(_recipe(source=DEMO_TOFU, template="llama3")).data
    assert (data.kind, data.forget_split, data.retain_split, data.template) == (
        "tofu",
        "forget10",
        "retain90",
        "llama3",
    )
    assert validate_recipe(_recipe(source=DEMO_TOFU, forget_split="forget05")).data.retain_split == "retain95"
    muse = validate_recipe(_recipe()).data
    assert (muse.kind, muse.forget_split, muse.retain_split, muse.template) == (
        "muse",
        "forget",
        "retain1",
        "plain",
    )
    with pytest.raises(
        RecipeError, match=r"retain_split 'retain95' does not pair with forget10.*use retain90"
    ):
        validate_recipe(_recipe(source="locuslab/TOFU", retain_split="retain95"))
    with pytest.raises(RecipeError, match=r"forget_split 'forget' is not a TOFU forget split"):
        validate_recipe(_recipe(source="demo", benchmark="tofu", forget_split="forget"))
    with pytest.raises(RecipeError, match=r"data.template: .*'llama2' or 'llama3'"):
        validate_recipe(_recipe(source=DEMO_TOFU, template="chatml"))


def test_recipe_lm_eval_section() -> None:
    recipe = validate_recipe({**_recipe(), "lm_eval": {"tasks": ["arc_easy"], "limit": 10}})
    assert recipe.lm_eval.tasks == ("arc_easy",) and recipe.lm_eval.num_fewshot == 0
    assert validate_recipe(_recipe()).lm_eval is None
    with pytest.raises(RecipeError, match=r"lm_eval.tasks"):
        validate_recipe({**_recipe(), "lm_eval": {"tasks": []}})


def test_unlearning_on_tofu_windows_scores_the_answers_only(tmp_path: Path) -> None:
    tok = char_tokenizer()
    corpus = load_tofu(DEMO_TOFU, {TOFU: ["forget", "retain"]}, "forget01")
    forget = training_windows(corpus, "forget", tok, max_length=256)
    retain = training_windows(corpus, "retain", tok, max_length=256)[:8]
    settings = dict(max_steps=1, per_device_train_batch_size=2, report_to="none", save_strategy="no")
    args = UnlearningConfig(
        output_dir=str(tmp_path),
        forget_loss="npo",
        retain_loss="gdr",
        disable_tqdm=True,
        use_cpu=True,
        **settings,
    )
    model = tiny_llama(tok).eval()
    # NPO's cached nll(θ₀, x_f) is the answer-only NLL: -Σ log p over the answer tokens and EOS
    expected = [-total for total, _ in answer_logprobs(model, tok, forget, batch_size=3)]
    trainer = UnlearningTrainer(
        model=model, args=args, train_dataset=ForgetRetainDataset(forget, retain), processing_class=tok
    )
    torch.testing.assert_close(trainer._ref_nll, torch.tensor(expected), rtol=1e-4, atol=1e-4)
    trainer.train()
    assert trainer.state.global_step == 1


def test_tofu_recipes_use_the_published_settings() -> None:
    recipes = Path(__file__).parents[1] / "recipes"
    audit = load_recipe(recipes / "tofu_llama32_1b_audit.yaml")
    assert audit.model.target == "open-unlearning/tofu_Llama-3.2-1B-Instruct_full"
    assert audit.model.retrain == "open-unlearning/tofu_Llama-3.2-1B-Instruct_retain90"
    data = audit.data
    assert (data.source, data.kind, data.template, data.forget_split, data.retain_split, data.max_length) == (
        "locuslab/TOFU", "tofu", "llama3", "forget10", "retain90", 512,
    )  # fmt: skip
    # open-unlearning's NPO: lr 1e-5, wd 0.01, 10 epochs, one of warm-up, effective batch 32, beta 0.1
    train = audit.train
    assert (train["learning_rate"], train["weight_decay"], train["num_train_epochs"]) == (1e-5, 0.01, 10)
    assert train["per_device_train_batch_size"] * train["gradient_accumulation_steps"] == 32
    assert train["warmup_steps"] == -(-400 // 32)  # one epoch of forget10's 400 pairs
    assert [(m.name, m.beta, m.retain_weight) for m in audit.method] == [("npo_gdr", 0.1, 1.0)]
    demo = load_recipe(recipes / "demo_tofu.yaml")
    assert (demo.data.kind, demo.model.target, demo.model.retrain) == ("tofu", "demo_tofu", "demo_tofu")
    assert all(name.startswith("tofu_") for name in audit.evaluate + demo.evaluate)
