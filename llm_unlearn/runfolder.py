"""The run folder's layout, in one place: every stage reads and writes its files through `RunFolder`.

```
RUN_DIR/
  recipe.yaml                    the resolved recipe (written once the inputs are validated)
  audited.json                   the audited models: name, target, checkpoint, where it came from
  results.jsonl                  one line per model × target × quantizer × metric (audit/results.py)
  diagnostics.jsonl              weight diagnostics per unlearned model × quantizer
  verdict.json                   the release verdict per unlearned model × quantizer × forget metric
  report.md, report.html
  models/<run>@<target>/         checkpoints this run made (unlearned, merged adapters, the grid copy)
  models/<run>@<target>.log.json        the training log
  models/<run>@<target>.method.json     the method settings resolved at run time
  models/<run>@<target>.adapter/        a LoRA run's adapter before merging
  quantized/<model>@<target>/<quantizer>/   the audit's cache of quantized models (codes, audit/cache.py)
  relearned/<model>@<target>/<column>/      the audit's cache of relearned models
  hub/<model>/README.md          the model card `push` rendered
  hub/<model>/<quantizer>/       a quantized variant made loadable for `push --with-quantized`
```

Every JSON or YAML file here is written atomically (a temporary file, then a rename), so a killed
run leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, value: Any) -> Path:
    return write_atomic(path, json.dumps(value, indent=1, default=str) + "\n")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class RunFolder:
    root: Path

    # --- files of the whole run ---
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def audited(self) -> Path:
        return self.root / "audited.json"

    @property
    def results(self) -> Path:
        return self.root / "results.jsonl"

    @property
    def diagnostics(self) -> Path:
        return self.root / "diagnostics.jsonl"

    @property
    def verdict(self) -> Path:
        return self.root / "verdict.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def models(self) -> Path:
        return self.root / "models"

    # --- one model's files ---
    def checkpoint(self, model: str) -> Path:
        """`model` is RUN@TARGET."""
        return self.models / model

    def trainer_scratch(self, model: str) -> Path:
        return self.models / f"{model}.trainer"

    def training_log(self, model: str) -> Path:
        return self.models / f"{model}.log.json"

    def method_file(self, model: str) -> Path:
        return self.models / f"{model}.method.json"

    def adapter(self, model: str) -> Path:
        return self.models / f"{model}.adapter"

    @property
    def quantized_root(self) -> Path:
        """The audit's cache of quantized models: `<model>@<target>/<quantizer>/` below it."""
        return self.root / "quantized"

    def quantized(self, model: str) -> Path:
        """The quantized variants of `model` (RUN@TARGET), one folder per quantizer."""
        return self.quantized_root / model

    def relearned(self, model: str, column: str) -> Path:
        return self.root / "relearned" / model / column

    def hub_card(self, model: str) -> Path:
        return self.root / "hub" / model / "README.md"

    def hub_quantized(self, model: str, quantizer: str) -> Path:
        """The loadable checkpoint `push --with-quantized` makes of a cached cell (audit/cache.py)."""
        return self.root / "hub" / model / quantizer

    # --- typed reads and writes ---
    def read_recipe(self) -> dict[str, Any] | None:
        return yaml.safe_load(self.recipe.read_text(encoding="utf-8")) if self.recipe.is_file() else None

    def write_recipe(self, resolved: dict[str, Any]) -> None:
        write_atomic(self.recipe, yaml.safe_dump(resolved, sort_keys=False))

    def read_audited(self) -> list[dict[str, str]]:
        return read_json(self.audited) if self.audited.is_file() else []

    def write_audited(self, models: list[dict[str, str]]) -> None:
        write_json(self.audited, models)

    def read_method(self, model: str) -> dict[str, Any] | None:
        path = self.method_file(model)
        return read_json(path) if path.is_file() else None
