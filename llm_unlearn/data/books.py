"""Turn books (public-domain novels) into a MUSE-layout benchmark folder, deterministically.

The layout is the one `load_muse` reads (DIR/<config>/<split>.json):

- raw/forget: the forget chapters as passages; raw/retain1: chapters of the other books (trained
  on); raw/retain2: further chapters of those books (never trained on, for utility); raw/holdout:
  chapters of the forget book never trained on (same author, style and characters).
- verbmem/forget: {prompt, gt}: the opening words of a forget passage and the words that follow.
- knowmem/*_qa: next-name questions. Where a sentence of the chapters names exactly one of the
  book's listed characters, once, the words of the passage leading up to that name are quoted
  and the answer is the name. Who said or did what at that point is the knowledge a reader of
  those chapters has, and the gold is one unambiguous word, so ROUGE scores it the way it scores
  MUSE's short answers. *_qa_icl: three questions of the same kind from chapters outside the
  benchmark, to show the answer format.
- privleak/{forget, retain, holdout}: passages of those texts (members, and the two non-members).

Everything is chosen by position and a seeded shuffle, so the same books give the same folder.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_CHAPTER = re.compile(r"^\s*chapter\s+([0-9]+|[ivxlc]+)\.?\s*$", re.IGNORECASE)
# a split after . ! ? (and closing quotes) before a capital, but not after a title such as "Mr."
_SENTENCE_END = re.compile(
    r"(?:(?<=[.!?])(?<!Mr\.)(?<!Mrs\.)(?<!Dr\.)(?<!St\.)|(?<=[.!?][\"'_]))\s+(?=[\"'_]*[A-Z])"
)
BLANK = "____"


@dataclass(frozen=True)
class Book:
    """A novel as chapters of plain text, with the character names its next-name questions ask for."""

    title: str
    chapters: tuple[str, ...]
    characters: tuple[str, ...]

    @classmethod
    def from_lines(cls, title: str, lines: Sequence[str], characters: Sequence[str]) -> Book:
        """Split a book's lines at its `Chapter N` / `CHAPTER IV` headings (front matter dropped);
        paragraphs (runs of non-empty lines) become one line each, joined by newlines."""
        chapters: list[list[str]] = []
        for line in lines:
            if _CHAPTER.match(line):
                chapters.append([])
            elif chapters:
                chapters[-1].append(line.strip())
        texts = tuple(_paragraphs(c) for c in chapters if any(c))
        if not texts:
            raise ValueError(f"{title}: no 'Chapter N' headings found")
        return cls(title, texts, tuple(characters))


def _paragraphs(lines: list[str]) -> str:
    paragraphs, current = [], []
    for line in [*lines, ""]:
        if line:
            current.append(line)
        elif current:
            paragraphs.append(" ".join(current))
            current = []
    return "\n".join(paragraphs)


def passages(text: str, words: int) -> list[str]:
    """`text` cut into consecutive passages of about `words` words, each ending at a sentence end
    (a passage is closed at the first sentence end once it holds `words` words)."""
    out, current, count = [], [], 0
    for sentence in sentences(text):
        current.append(sentence)
        count += len(sentence.split())
        if count >= words:
            out.append(" ".join(current))
            current, count = [], 0
    if current:
        out.append(" ".join(current))
    return out


def sentences(text: str) -> list[str]:
    """The sentences of `text`, paragraph by paragraph."""
    return [s.strip() for paragraph in text.split("\n") for s in _SENTENCE_END.split(paragraph) if s.strip()]


def next_name_questions(
    book: Book, texts: Sequence[str], limit: int, seed: int, context_words: int = 24
) -> list[dict[str, str]]:
    """Up to `limit` next-name questions from `texts` (passages of `book`), seeded choice.

    Kept: sentences of 8 to 40 words naming exactly one listed character, exactly once, as a
    whole word, with at least 6 words of the passage before the name. The question quotes the
    `context_words` words of the passage that lead up to the name, then ____; the answer is the
    name. A reader who knows the passage knows who comes next; one who never read it has only the
    book's general cast to guess from. (SmolLM2-135M fine-tuned on the passages still answers ~0
    in MUSE's Question/Answer format: README, "Real-model audit".)
    """
    names = {name: re.compile(rf"\b{re.escape(name)}\b") for name in book.characters}
    found = []
    for text in texts:
        before: list[str] = []
        for sentence in sentences(text):
            hits = [(name, pattern) for name, pattern in names.items() if pattern.search(sentence)]
            if 8 <= len(sentence.split()) <= 40 and len(hits) == 1 and len(hits[0][1].findall(sentence)) == 1:
                name, pattern = hits[0]
                lead = [*before, *sentence[: pattern.search(sentence).start()].split()][-context_words:]
                if len(lead) >= 6:
                    quoted = " ".join(lead).replace('"', "'")
                    question = f'In {book.title}, whose name comes next: "{quoted} {BLANK}"'
                    found.append({"question": question, "answer": name})
            before.extend(sentence.split())
    random.Random(seed).shuffle(found)
    return found[:limit]


def verbmem_records(texts: Sequence[str], prompt_words: int, gt_words: int) -> list[dict[str, str]]:
    """One {prompt, gt} per text long enough: its first `prompt_words` words, then `gt_words`."""
    records = []
    for text in texts:
        words = text.split()
        if len(words) >= prompt_words + gt_words:
            prompt, gt = words[:prompt_words], words[prompt_words : prompt_words + gt_words]
            records.append({"prompt": " ".join(prompt), "gt": " ".join(gt)})
    return records


@dataclass(frozen=True)
class BenchmarkSpec:
    """Which chapters play which part, and how much of each is kept (sized for the machine)."""

    forget_chapters: tuple[int, ...]
    holdout_chapters: tuple[int, ...]
    icl_chapters: tuple[int, ...]
    retain_chapters: tuple[int, ...]  # of every retain book: trained on
    retain2_chapters: tuple[int, ...]  # of every retain book: never trained on
    retain_passages: int | None = None  # at most this many passages of each retain book
    passage_words: int = 90
    verbmem: int = 12
    knowmem: int = 30
    privleak: int = 24
    seed: int = 0


def build_benchmark(
    forget: Book, retain_books: Sequence[Book], spec: BenchmarkSpec, dest: Path
) -> dict[str, int]:
    """Write the MUSE-layout folder for `forget` (the book to unlearn) and `retain_books` into `dest`;
    returns the number of records per config/split."""

    def cut(book: Book, chapters: Sequence[int], limit: int | None = None) -> list[str]:
        return passages("\n".join(book.chapters[i] for i in chapters), spec.passage_words)[:limit]

    forget_passages = cut(forget, spec.forget_chapters)
    holdout_passages = cut(forget, spec.holdout_chapters)
    retain = {b.title: (b, cut(b, spec.retain_chapters, spec.retain_passages)) for b in retain_books}
    retain_passages = [p for _, texts in retain.values() for p in texts]
    retain_qa = [
        q for b, texts in retain.values() for q in next_name_questions(b, texts, spec.knowmem, spec.seed)
    ]
    retain_icl = [
        q for b in retain_books for q in next_name_questions(b, cut(b, spec.retain2_chapters), 1, spec.seed)
    ]
    rng = random.Random(spec.seed)
    icl = next_name_questions(forget, cut(forget, spec.icl_chapters), 3, spec.seed)
    splits = {
        ("raw", "forget"): forget_passages,
        ("raw", "retain1"): retain_passages,
        ("raw", "retain2"): [
            p for b in retain_books for p in cut(b, spec.retain2_chapters, spec.retain_passages)
        ],
        ("raw", "holdout"): holdout_passages,
        ("verbmem", "forget"): verbmem_records(forget_passages, 30, 50)[: spec.verbmem],
        ("knowmem", "forget_qa"): next_name_questions(forget, forget_passages, spec.knowmem, spec.seed),
        ("knowmem", "forget_qa_icl"): icl,
        ("knowmem", "retain_qa"): rng.sample(retain_qa, min(spec.knowmem, len(retain_qa))),
        ("knowmem", "retain_qa_icl"): retain_icl[:3],
        ("privleak", "forget"): forget_passages[: spec.privleak],
        ("privleak", "retain"): retain_passages[: spec.privleak],
        ("privleak", "holdout"): holdout_passages[: spec.privleak],
    }
    for (config, split), records in splits.items():
        if not records:
            raise ValueError(f"{config}/{split} came out empty: give it more chapters")
        path = dest / config / f"{split}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(records, indent=1, ensure_ascii=False))
    return {f"{config}/{split}": len(records) for (config, split), records in splits.items()}
