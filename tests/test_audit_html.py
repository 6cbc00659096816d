"""The HTML audit: self-contained, escaped, coloured by recovery, with plots and worst examples."""

from __future__ import annotations

import re

from llm_unlearn.audit.html import css, render_html, worst_examples
from llm_unlearn.audit.report import AuditCells

SCRIPT = "<script>alert('forgotten')</script>"


def record(model, target, quantizer, metric, value, examples=None) -> dict:
    config = {"name": quantizer, "method": "none"} if quantizer == "fp" else {"name": quantizer, "bits": 4}
    return {
        "model": model,
        "target": target,
        "quantizer": quantizer,
        "metric": metric,
        "agg_value": value,
        "quantizer_config": config,
        "value_by_index": examples or {},
    }


def results() -> list[dict]:
    rows = []
    values = {  # (fp, 4-bit) per model and metric
        ("target", "natural"): {"knowmem_forget": (60, 60), "knowmem_retain": (70, 70), "verbmem": (65, 64)},
        ("retrain", "-"): {"knowmem_forget": (5, 5), "knowmem_retain": (50, 50), "verbmem": (20, 21)},
        ("ga_gdr", "natural"): {"knowmem_forget": (20, 52), "knowmem_retain": (48, 60), "verbmem": (30, 33)},
        ("oeu", "natural"): {"knowmem_forget": (10, 22), "knowmem_retain": (62, 61), "verbmem": (25, 26)},
    }
    leak = {"0": {"question": "Where was Vobis born?", "gold": "Krerfamoor", "output": SCRIPT, "score": 99.0}}
    for (model, target), metrics in values.items():
        for metric, (fp, q4) in metrics.items():
            rows.append(record(model, target, "fp", metric, fp))
            examples = leak if (model, metric) == ("ga_gdr", "knowmem_forget") else None
            rows.append(record(model, target, "rtn-w4-g32", metric, q4, examples))
    return rows


DIAGNOSTICS = [
    {
        "model": "ga_gdr",
        "target": "natural",
        "quantizer": "rtn-w4-g32",
        "metric": "diagnostics",
        "overall": {"bucket_overlap": 0.999, "update_kept": 0.1},
        "layers": {"a": {"update_kept": 0.05}, "b": {"update_kept": 0.2}},
    }
]


def test_page_is_self_contained_escaped_and_coloured() -> None:
    page = render_html(
        results(), DIAGNOSTICS, "demo <b>run</b>", recipe={"name": "demo", "train": {"seed": 0}}
    )
    assert SCRIPT not in page and "&lt;script&gt;alert(&#39;forgotten&#39;)&lt;/script&gt;" in page
    assert "demo &lt;b&gt;run&lt;/b&gt;" in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched at view time
    assert page.count('src="data:image/png;base64,') == 3  # metric vs bits, trade-off, update kept
    # ga_gdr brought back (52 − 20) / (60 − 20) = 80 % of KnowMem-forget at 4 bits: a failed cell
    assert '<td class="back">52.0 (80%)</td>' in page
    assert '<td class="kept">22.0 (24%)</td>' in page  # oeu: (22 − 10) / (60 − 10)
    assert "seed: 0" in page and "transformers" in page


def test_worst_examples_come_from_cells_where_forgetting_came_back() -> None:
    rows = results()
    rows.append(record("target", "natural", "fp", "verbmem", 65, {"0": {"prompt": "p", "score": 100.0}}))
    # full precision and a cell that holds (oeu: 24 %) are no place where forgetting came back
    rows.append(
        record("ga_gdr", "natural", "fp", "knowmem_forget", 20, {"0": {"prompt": "p", "score": 98.0}})
    )
    oeu = {"0": {"prompt": "p", "output": "o", "score": 97.0}}
    rows.append(record("oeu", "natural", "rtn-w4-g32", "knowmem_forget", 22, oeu))
    worst = worst_examples(rows, AuditCells(rows))
    assert [(e["model"], e["quantizer"]) for e in worst] == [("ga_gdr", "rtn-w4-g32")]
    assert worst[0]["output"] == SCRIPT


def test_each_verdict_has_its_colour() -> None:
    rows = results() + [
        record("weak", "natural", "fp", "knowmem_forget", 59.5),
        record("weak", "natural", "rtn-w4-g32", "knowmem_forget", 60),
    ]
    cells = AuditCells(rows)
    colour = {
        m: css(cells.get(m, "natural", "rtn-w4-g32", "knowmem_forget")) for m in ("ga_gdr", "oeu", "weak")
    }
    assert colour == {"ga_gdr": "back", "oeu": "kept", "weak": "never"}  # weak moved 0.5 < 1 point
    assert css(cells.get("ga_gdr", "natural", "rtn-w4-g32", "knowmem_retain")) == ""  # no forget metric
    assert css(cells.get("target", "natural", "fp", "knowmem_forget")) == ""
