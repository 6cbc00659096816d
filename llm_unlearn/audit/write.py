"""A run's reports on disk: report.md, report.html, verdict.json and certificate.json, written from
its result files.

Above both renderers (`report.py`'s markdown and verdict, `html.py`'s page, which reads
`report.py`'s tables), so neither imports the other's writer.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from llm_unlearn.audit.certificate import write_certificate
from llm_unlearn.audit.html import render_html
from llm_unlearn.audit.report import AuditCells, render_markdown, verdict_settings
from llm_unlearn.audit.results import ResultsFile
from llm_unlearn.runfolder import RunFolder, write_atomic, write_json


def write_report(run_dir: Path) -> Path:
    """Write run_dir/report.md, report.html, verdict.json and the certificate binding that verdict to
    the files audited (`audit/certificate.py`) from the run's result files, under the recipe's
    verdict settings (the defaults without one); return the .md path. Each file is written
    atomically: a reader (a CI gate on verdict.json) never sees half of one."""
    folder = RunFolder(run_dir)
    results = list(ResultsFile(folder.results))
    diagnostics = list(ResultsFile(folder.diagnostics)) if folder.diagnostics.is_file() else []
    recipe = folder.read_recipe()
    cells = AuditCells(results, verdict_settings(recipe, str(folder.recipe)))
    title = recipe["name"] if recipe else run_dir.name
    text = render_markdown(results + diagnostics, title, cells)
    if recipe:
        text += "\n## Recipe\n\n```yaml\n" + yaml.safe_dump(recipe, sort_keys=False) + "```\n"
    write_atomic(folder.report_md, text)
    write_json(folder.verdict, cells.verdict())
    write_certificate(run_dir)
    write_atomic(folder.report_html, render_html(results, diagnostics, title, recipe, cells))
    return folder.report_md
