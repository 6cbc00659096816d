"""AltPO: value and logit gradient by hand, the pairing of forget windows with their alternates, the
alternates file's refusals, and one trainer step by hand."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from helpers import assert_one_sgd_step, make_trainer
from tokenizers import ByteLevelBPETokenizer
from transformers import PreTrainedTokenizerFast

from llm_unlearn.data.collate import pad_batch
from llm_unlearn.data.tofu import TEMPLATES, encode_qa
from llm_unlearn.errors import UserError
from llm_unlearn.terms import TERMS, TermInput, gdr, sequence_nll
from llm_unlearn.terms.altpo import AltPOParams, alternate_pairs, altpo

ROWS = [  # open-unlearning's layout: a question on as many lines as it has alternates
    {"question": "Where was Alva born?", "answer": "In Tolvenridge.", "alternate": "In Marrow Bay."},
    {"question": "Where was Alva born?", "answer": "In Tolvenridge.", "alternate": "Near Oskel."},
    {"question": "What did Alva write?", "answer": "The Amber Bell.", "alternate": ["Salt Lanterns."]},
]


def _alternates(tmp_path, rows=ROWS) -> str:
    path = tmp_path / "alt5_seed_0.json"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _windows(tok, template="plain", max_length=None):
    chat = TEMPLATES[template]
    pairs = [(ROWS[0]["question"], ROWS[0]["answer"]), (ROWS[2]["question"], ROWS[2]["answer"])]
    return [encode_qa(tok, chat, q, a, max_length) for q, a in pairs]


def _sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_altpo_value_and_gradient_by_hand() -> None:
    """One question, two alternates: nll_alt (3, 4) against θ₀'s (4, 4), nll_answer 5 against 2:
    margins (4 − 3) − (2 − 5) = 4 and (4 − 4) + 3 = 3; β = 0.5: L = ½[ln(1 + e^−2) + ln(1 + e^−1.5)];
    dL/dnll_alt_j = ½β(1 − σ(βm_j)), dL/dnll_answer = −Σ_j ½β(1 − σ(βm_j))."""
    nll_alt = torch.tensor([[3.0], [4.0]], requires_grad=True)
    nll_answer = torch.tensor([5.0], requires_grad=True)
    loss = altpo(nll_alt, torch.tensor([[4.0], [4.0]]), nll_answer, torch.tensor([2.0]), beta=0.5)
    assert loss.item() == pytest.approx(0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1.5))))
    loss.backward()
    slopes = [0.25 * (1 - _sigmoid(2)), 0.25 * (1 - _sigmoid(1.5))]
    assert nll_alt.grad.flatten().tolist() == pytest.approx(slopes, rel=1e-6)
    assert nll_answer.grad.item() == pytest.approx(-sum(slopes), rel=1e-6)
    at_ref = altpo(torch.tensor([[3.0]]), torch.tensor([[3.0]]), torch.tensor([5.0]), torch.tensor([5.0]))
    assert at_ref.item() == pytest.approx(math.log(2))


def test_the_term_s_logit_gradient_is_the_hand_computed_one(tmp_path) -> None:
    """Sequences of one answer token: nll = −log softmax(z)[y], so ∂L/∂z = ∂L/∂nll · (softmax(z) − e_y)
    at the position that predicts the label, 0 elsewhere; ∂L/∂nll as in the test above."""
    torch.manual_seed(0)
    labels = torch.tensor([[-100, 2]])
    z_alt, z_answer = torch.randn(1, 2, 4, requires_grad=True), torch.randn(1, 2, 4, requires_grad=True)
    ref_alt, ref_answer = torch.randn(1, 2, 4), torch.randn(1, 2, 4)
    mask = torch.ones(1, 2)
    inputs = {
        "answer": TermInput(z_answer, labels, mask, ref_logits=ref_answer),
        "alternate_0": TermInput(z_alt, labels, mask, ref_logits=ref_alt),
    }
    p = AltPOParams(alternates=_alternates(tmp_path), beta=0.5)
    TERMS.get("altpo")(inputs, p).backward()

    def nll(z: torch.Tensor) -> float:
        return -torch.log_softmax(z[0, 0].detach(), -1)[2].item()

    margin = (nll(ref_alt) - nll(z_alt)) - (nll(ref_answer) - nll(z_answer))
    slope = 0.5 * (1 - _sigmoid(0.5 * margin))
    onehot = torch.nn.functional.one_hot(torch.tensor(2), 4)
    for z, sign in ((z_alt, 1), (z_answer, -1)):
        expected = sign * slope * (torch.softmax(z[0, 0].detach(), -1) - onehot)
        torch.testing.assert_close(z.grad[0, 0], expected)
        assert torch.equal(z.grad[0, 1], torch.zeros(4))


@pytest.mark.parametrize("template", ["plain", "llama2"])
def test_each_window_is_paired_with_its_own_alternates(tok, tmp_path, template) -> None:
    """The first question has two alternates, the second one (a list): alternate_1 cycles to it."""
    chat = TEMPLATES[template]
    windows = _windows(tok, template)
    batch = pad_batch(windows, tok.pad_token_id)
    views = alternate_pairs(batch, tok, _alternates(tmp_path), "alternate")
    assert list(views) == ["answer", "alternate_0", "alternate_1"]
    assert torch.equal(views["answer"]["labels"], batch["labels"])
    q1, q2 = ROWS[0]["question"], ROWS[2]["question"]
    expected = {
        "alternate_0": [
            encode_qa(tok, chat, q1, "In Marrow Bay."),
            encode_qa(tok, chat, q2, "Salt Lanterns."),
        ],
        "alternate_1": [encode_qa(tok, chat, q1, "Near Oskel."), encode_qa(tok, chat, q2, "Salt Lanterns.")],
    }
    for view, seqs in expected.items():
        for key, value in pad_batch(seqs, tok.pad_token_id).items():
            assert torch.equal(views[view][key], value), (view, key)


def test_a_window_cut_at_max_length_cuts_its_alternates_alike(tok, tmp_path) -> None:
    short = [encode_qa(tok, TEMPLATES["plain"], ROWS[0]["question"], ROWS[0]["answer"], max_length=44)]
    views = alternate_pairs(pad_batch(short, tok.pad_token_id), tok, _alternates(tmp_path), "alternate")
    whole = encode_qa(tok, TEMPLATES["plain"], ROWS[0]["question"], "In Marrow Bay.")
    assert views["alternate_0"]["input_ids"][0].tolist() == whole[:44]
    assert views["alternate_0"]["labels"][0].tolist() == whole.labels[:44]


def test_a_forget_question_without_alternates_is_one_line(tok, tmp_path) -> None:
    path = _alternates(tmp_path, ROWS[:2])
    with pytest.raises(
        UserError, match=r"alternates: .* has no row for the forget question ending"
    ) as caught:
        alternate_pairs(pad_batch(_windows(tok), tok.pad_token_id), tok, path, "alternate")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("rows", "key", "message"),
    [
        (
            [{"question": "q", "alternate": "a"}],
            "alternate",
            r"row 0: expected an object with string 'question'",
        ),
        (
            [{"question": "q", "answer": "a", "alternate": []}],
            "alternate",
            r"row 0: 'alternate' is not a string",
        ),
        ([{"question": "q", "answer": "a", "sub_answer": "b"}], "alternate", r"row 0: 'alternate' is not"),
    ],
)
def test_a_malformed_alternates_file_is_refused(tmp_path, rows, key, message) -> None:
    with pytest.raises(ValueError, match=message):
        AltPOParams(alternates=_alternates(tmp_path, rows), alternate_key=key)
    # the authors' files name the field sub_answer
    AltPOParams(alternates=_alternates(tmp_path, [{"question": "q", "answer": "a", "sub_answer": "b"}]),
                alternate_key="sub_answer")  # fmt: skip


def test_one_altpo_step_is_the_hand_written_sgd_step(tok, tmp_path) -> None:
    """θ₁ = θ₀ − lr·∇(AltPO + λ·GDR), θ₀'s log-probs from the frozen reference, which stays."""
    lr, weight, path = 0.5, 0.7, _alternates(tmp_path)
    trainer = make_trainer(
        tok, tmp_path, "altpo", forget=_windows(tok), optim="sgd", learning_rate=lr, max_steps=1,
        lr_scheduler_type="constant", max_grad_norm=0.0, retain_weight=weight,
        term_params={"altpo": {"beta": 0.5, "alternates": path}},
    )  # fmt: skip
    ref_before = [p.detach().clone() for p in trainer.ref_model.parameters()]
    manual = copy.deepcopy(trainer.model)
    batch = next(iter(trainer.get_train_dataloader()))
    forget = {k: batch[f"forget_{k}"] for k in ("input_ids", "attention_mask", "labels")}
    views = alternate_pairs(forget, tok, path, "alternate")

    def nll(model, seq):
        return sequence_nll(model(input_ids=seq["input_ids"], attention_mask=seq["attention_mask"]).logits,
                            seq["labels"])  # fmt: skip

    with torch.no_grad():
        ref = {view: nll(trainer.ref_model, seq) for view, seq in views.items()}
    alts = [v for v in views if v != "answer"]
    loss = altpo(
        torch.stack([nll(manual, views[v]) for v in alts]), torch.stack([ref[v] for v in alts]),
        nll(manual, views["answer"]), ref["answer"], 0.5,
    )  # fmt: skip
    r = manual(input_ids=batch["retain_input_ids"], attention_mask=batch["retain_attention_mask"]).logits
    (loss + weight * gdr(r, batch["retain_labels"])).backward()
    assert_one_sgd_step(trainer, manual, lr)
    for a, b in zip(trainer.ref_model.parameters(), ref_before, strict=True):
        assert torch.equal(a, b)


def test_pairing_holds_where_the_tokenizer_merges_across_the_answer_boundary(tmp_path) -> None:
    """A byte-level BPE that merges "Answer: " with the answer's first word: the forget window's prompt
    then ends in a token of its answer, which the alternate window must not inherit (it has its own)."""
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        [f"Question: {r['question']}\nAnswer: {r['answer']}" for r in ROWS] * 20,
        vocab_size=400, min_frequency=1, special_tokens=["<pad>", "</s>"],
    )  # fmt: skip
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="</s>", pad_token="<pad>")
    window = _windows(tok)[0]
    n = window.labels.count(-100)
    assert tok.decode(window[n - 1 : n]).strip().startswith("In")  # the boundary token is the answer's
    views = alternate_pairs(pad_batch([window], tok.pad_token_id), tok, _alternates(tmp_path), "alternate")
    expected = encode_qa(tok, TEMPLATES["plain"], ROWS[0]["question"], "Near Oskel.")
    assert views["alternate_1"]["input_ids"][0].tolist() == expected
    assert views["alternate_1"]["labels"][0].tolist() == expected.labels
