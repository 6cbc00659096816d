"""TOFU (Maini et al. 2024, arXiv 2401.06121): its Hub layout, and its QA pairs as training windows
in the chat format the benchmark's models were fine-tuned with.

`locuslab/TOFU` keeps one config per file, `DIR/<config>.json`, each a JSON-lines file (one record
a line) that datasets reads as the config's only split, "train":

| config | record |
|---|---|
| full, forget01/05/10, retain90/95/99, holdout01/05/10, real_authors, world_facts | question, answer |
| forget01/05/10_perturbed, retain_perturbed | + paraphrased_answer, perturbed_answer (list), |
|   | paraphrased_question |
| real_authors_perturbed, world_facts_perturbed | + perturbed_answer (list) |

A forget set forgetNN pairs with retain(100-NN) (the rest of the 200 authors) and holdoutNN. Metrics
and recipes name splits by role ("forget", "forget_perturbed", "retain", "holdout"), resolved from
the corpus' forget split, or by config name. Every problem a user can fix is a one-line DataError
naming the source, config or field.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_unlearn.data.collate import IGNORE_INDEX, LabeledWindow
from llm_unlearn.data.corpora import DataError, is_hub_id

TOFU = "tofu"  # the one config name of a TofuCorpus, as "raw" or "knowmem" name MUSE's
DEMO_TOFU = "demo_tofu"
DEMO_TOFU_DIR = Path(__file__).parent / "demo_tofu"
HUB_ID = "locuslab/TOFU"
FORGET_SPLITS = ("forget01", "forget05", "forget10")
RETAIN_SPLITS = ("retain99", "retain95", "retain90")

_QA = ("question", "answer")
_PARAPHRASED = (*_QA, "paraphrased_answer", "perturbed_answer")
_OPTIONS = (*_QA, "perturbed_answer")
#: the fields each config's records must have (paraphrased_question is kept when present)
FIELDS: dict[str, tuple[str, ...]] = {
    **{c: _QA for c in ("full", "real_authors", "world_facts")},
    **{f"{kind}{n}": _QA for kind in ("forget", "holdout") for n in ("01", "05", "10")},
    **{c: _QA for c in RETAIN_SPLITS},
    **{f"{c}_perturbed": _PARAPHRASED for c in FORGET_SPLITS},
    "retain_perturbed": _PARAPHRASED,
    "real_authors_perturbed": _OPTIONS,
    "world_facts_perturbed": _OPTIONS,
}
_KEPT = ("question", "answer", "paraphrased_answer", "paraphrased_question", "perturbed_answer")
ROLES = ("forget", "forget_perturbed", "retain", "holdout")


def role_config(role_or_config: str, forget_split: str) -> str:
    """The TOFU config a role names for `forget_split` (forget10: retain -> retain90, holdout ->
    holdout10, forget_perturbed -> forget10_perturbed); a config name is returned as it is."""
    number = forget_split.removeprefix("forget")
    resolved = {
        "forget": forget_split,
        "forget_perturbed": f"{forget_split}_perturbed",
        "retain": f"retain{100 - int(number)}",
        "holdout": f"holdout{number}",
    }
    return resolved.get(role_or_config, role_or_config)


#: a question and its answer, as a template renders an earlier turn
QA = tuple[str, str]


@dataclass(frozen=True)
class ChatTemplate:
    """How a fine-tuned model saw a QA pair: `system + before + question + after + answer + end`,
    then EOS.

    The tokenizer adds its own special tokens (Llama's BOS) in front. The prompt is everything up to
    the answer; training and scoring take the loss on the answer tokens (and EOS) only.

    Earlier QA pairs (`shots`: in-context examples; TOFU has no few-shot set of its own) are earlier
    turns of the same conversation, as open-unlearning's `preprocess_chat_instance`
    (src/data/utils.py, reached through `few_shot_dataset_hf_args`) renders few-shot examples: the
    system text once, then per shot `before + q + after + a + turn_end` (its `asst_end_tag`, which
    closes a turn the model answered; `end` closes the final answer, before the EOS), then the
    asked question. Without shots the text is the same as a single turn's.
    """

    before: str
    after: str
    end: str = ""
    #: strip question and answer, as the Llama-3 chat template's `| trim` does
    trim: bool = False
    #: what opens the conversation once, before its first turn (Llama-3's system turn)
    system: str = ""
    #: what closes an earlier turn's answer (open-unlearning's `asst_end_tag` for the model)
    turn_end: str = ""

    def _text(self, text: str) -> str:
        return text.strip() if self.trim else text

    def prompt(self, question: str, shots: Sequence[QA] = ()) -> str:
        turns = "".join(
            f"{self.before}{self._text(q)}{self.after}{self._text(a)}{self.turn_end}" for q, a in shots
        )
        return f"{self.system}{turns}{self.before}{self._text(question)}{self.after}"

    def full(self, question: str, answer: str, shots: Sequence[QA] = ()) -> str:
        return f"{self.prompt(question, shots)}{self._text(answer)}{self.end}"


# The formats open-unlearning fine-tuned its TOFU checkpoints with (configs/model/*.yaml, whose
# asst_end_tag is each `turn_end`): Llama-3.x-Instruct through the tokenizer's chat template with
# this system prompt and date (the rendered text, BOS excepted, is written out here so no tokenizer
# template is needed); Llama-2-7b-chat with [INST] tags; base models and phi-1.5 with
# Question/Answer lines.
_LLAMA3_SYSTEM = (
    "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
    "Today Date: 10 Apr 2025\n\nYou are a helpful assistant.<|eot_id|>"
)
TEMPLATES: dict[str, ChatTemplate] = {
    "plain": ChatTemplate("Question: ", "\nAnswer: ", turn_end="\n\n"),
    "llama2": ChatTemplate("[INST] ", " [/INST]", turn_end=" "),
    "llama3": ChatTemplate(
        "<|start_header_id|>user<|end_header_id|>\n\n",
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        end="<|eot_id|>",
        trim=True,
        system=_LLAMA3_SYSTEM,
        turn_end="<|eot_id|>",
    ),
}


def get_template(name: str) -> ChatTemplate:
    if name not in TEMPLATES:
        raise DataError(f"unknown TOFU template {name!r}; expected one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


@dataclass(frozen=True)
class TofuCorpus:
    """TOFU records by config ({question, answer, ...} dicts), the run's forget split (which the
    roles resolve against) and the chat template of the models that read them."""

    source: str
    forget_split: str
    records: dict[str, list[dict[str, Any]]]
    template: str = "plain"

    def get(self, config: str, split: str) -> list[dict[str, Any]]:
        """The records of `split` (a role or a TOFU config); `config` must be "tofu"."""
        if config != TOFU:
            raise DataError(
                f"{self.source}: a TOFU benchmark has question-answer pairs only, no MUSE {config!r} data; "
                "evaluate it with the tofu_* metrics"
            )
        name = role_config(split, self.forget_split)
        if name not in self.records:
            loaded = ", ".join(self.records) or "none"
            raise DataError(f"{self.source}: TOFU config {name!r} was not loaded; available: {loaded}")
        return self.records[name]


def load_tofu(
    source: str, needs: Mapping[str, Iterable[str]], forget_split: str = "forget10", template: str = "plain"
) -> TofuCorpus:
    """Load the TOFU configs `needs["tofu"]` names (roles or configs) from `source`.

    `source` is "demo_tofu" (the embedded demo in llm_unlearn/data/demo_tofu), a local folder laid
    out DIR/<config>.json (JSON lines, as on the Hub; a JSON list or a .jsonl file is read too), or
    a Hub dataset id such as locuslab/TOFU (datasets.load_dataset(source, config, split="train")).
    """
    if forget_split not in FORGET_SPLITS:
        raise DataError(
            f"{source}: {forget_split!r} is not a TOFU forget split; use {', '.join(FORGET_SPLITS)}"
        )
    get_template(template)
    for config in needs:
        if config != TOFU:
            raise DataError(f"{source}: a TOFU benchmark has no {config!r} config; it has only {TOFU!r}")
    wanted = dict.fromkeys(role_config(s, forget_split) for s in _names(needs.get(TOFU, ())))
    for name in wanted:
        if name not in FIELDS:
            raise DataError(f"{source}: unknown TOFU config {name!r}; expected a role ({', '.join(ROLES)}) "
                            f"or one of {', '.join(FIELDS)}")  # fmt: skip
    read = _reader(source)
    records = {name: _normalise(read(name), f"{source}: {name}", FIELDS[name]) for name in wanted}
    return TofuCorpus(source, forget_split, records, template)


def is_tofu_source(source: str) -> bool:
    """Whether `source` looks like TOFU: the embedded demo, a folder holding a TOFU config file
    (forget10.json, retain_perturbed.json, ...), or a Hub id whose name says TOFU."""
    if source == DEMO_TOFU:
        return True
    path = Path(source).expanduser()
    if path.is_dir():
        return any((path / f"{config}{ext}").is_file() for config in FIELDS for ext in (".json", ".jsonl"))
    return not path.exists() and is_hub_id(source) and "tofu" in source.lower()


def encode_qa(
    tokenizer: Any,
    template: ChatTemplate,
    question: str,
    answer: str,
    max_length: int | None = None,
    shots: Sequence[QA] = (),
) -> LabeledWindow:
    """One QA pair as a window with loss on the answer tokens and EOS only (prompt labels -100),
    asked after `shots` (earlier QA turns, part of the prompt).

    The prompt's length is that of its own tokenization, as open-unlearning splits it: where a
    tokenizer merges across the prompt/answer boundary the boundary token counts as prompt.
    """
    prompt_ids = tokenizer(template.prompt(question, shots))["input_ids"]
    ids = tokenizer(template.full(question, answer, shots))["input_ids"][:max_length]
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token; set one before encoding QA pairs")
    if ids[-1] != tokenizer.eos_token_id:
        ids = [*ids, tokenizer.eos_token_id][:max_length]
    n_prompt = len(prompt_ids)
    if n_prompt >= len(ids):
        raise DataError(
            f"data.max_length: {max_length} tokens leave no answer token after the {n_prompt}-token prompt "
            f"of {question[:60]!r}; raise max_length"
        )
    return LabeledWindow(ids, [IGNORE_INDEX] * n_prompt + ids[n_prompt:])


def training_windows(
    corpus: TofuCorpus, split: str, tokenizer: Any, template: str | None = None, max_length: int | None = None
) -> list[LabeledWindow]:
    """The QA pairs of `split` (a role such as "forget" / "retain", or a config) as answer-only
    windows, in the corpus' template unless `template` names another; cut to `max_length` tokens."""
    chat = get_template(template or corpus.template)
    return [
        encode_qa(tokenizer, chat, r["question"], r["answer"], max_length) for r in corpus.get(TOFU, split)
    ]


def qa_texts(corpus: TofuCorpus, split: str) -> list[str]:
    """The QA pairs of `split` as whole templated texts (calibration, relearning slices)."""
    chat = get_template(corpus.template)
    return [chat.full(r["question"], r["answer"]) for r in corpus.get(TOFU, split)]


def _names(splits: str | Iterable[str]) -> list[str]:
    return [splits] if isinstance(splits, str) else list(splits)


def _reader(source: str) -> Callable[[str], Any]:
    if source == DEMO_TOFU:
        return lambda config: _read_file(source, DEMO_TOFU_DIR, config)
    path = Path(source).expanduser()
    if path.is_dir():
        return lambda config: _read_file(source, path, config)
    if path.exists():
        raise DataError(f"{source}: is a file; expected a folder of TOFU files <config>.json")
    if not is_hub_id(source):
        raise DataError(f"{source}: folder not found (and not a Hub dataset id such as {HUB_ID})")
    return lambda config: _read_hub(source, config)


def _read_file(source: str, root: Path, config: str) -> list[Any]:
    file = next((f for f in (root / f"{config}.json", root / f"{config}.jsonl") if f.is_file()), None)
    if file is None:
        present = sorted(p.stem for p in root.glob("*.json*"))
        raise DataError(
            f"{source}: TOFU config {config!r}: {root / f'{config}.json'} not found; "
            f"the folder holds {', '.join(present) or 'no .json files'}"
        )
    text = file.read_text(encoding="utf-8")
    try:
        if text.lstrip().startswith("["):
            return json.loads(text)
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as error:
        raise DataError(f"{source}: {file} is neither JSON lines nor a JSON list: {error}") from None


def _read_hub(source: str, config: str) -> list[Any]:
    import datasets  # slow to import; only the Hub path needs it

    try:
        return list(datasets.load_dataset(source, config, split="train"))
    # as corpora._read_hub: every failure here (id, config, network) is the user's to fix
    except Exception as error:
        detail = " ".join(str(error).split())[:300]
        raise DataError(
            f"{source}: not a local folder, and Hub dataset config {config!r} could not be loaded: "
            f"{type(error).__name__}: {detail}"
        ) from error


def _normalise(records: Any, where: str, fields: tuple[str, ...]) -> list[dict[str, Any]]:
    if not isinstance(records, list) or not records:
        raise DataError(f"{where}: expected a non-empty list of records")
    out = []
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            raise DataError(f"{where}: record {index} is {type(record).__name__}; expected an object")
        for field in fields:
            if field not in record:
                raise DataError(
                    f"{where}: record {index} has no field {field!r}; expected {', '.join(fields)}"
                )
            value = record[field]
            if field == "perturbed_answer":
                if not (isinstance(value, list) and value and all(isinstance(v, str) for v in value)):
                    raise DataError(
                        f"{where}: record {index} field 'perturbed_answer' is not a non-empty list of strings"
                    )
            elif not isinstance(value, str):
                raise DataError(
                    f"{where}: record {index} field {field!r} is {type(value).__name__}; expected a string"
                )
        out.append({k: record[k] for k in _KEPT if k in record})
    return out
