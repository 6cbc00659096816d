"""The run folder's layout, in one place: every stage reads and writes its files through `RunFolder`.

```
RUN_DIR/
  recipe.yaml                    the resolved recipe (written once the inputs are validated)
  .lock                          who is writing the folder now (`claim`): pid and host
  audited.json                   the audited models: name, target, checkpoint, where it came from
  results.jsonl                  one line per model × target × quantizer × metric (audit/results.py)
  diagnostics.jsonl              weight diagnostics per unlearned model × quantizer
  verdict.json                   the release verdict per unlearned model × quantizer × forget metric
  certificate.json               the verdict bound to the sha256 of every file audited (audit/certificate.py)
  hashes.json                    the sha256 of files hashed before, by path and stat (filehash.py): read once
  report.md, report.html
  run.log                        warnings, library log lines, training logs (display.py): off the terminal
  models/<run>@<target>/         checkpoints this run made (unlearned, merged adapters, the grid-aligned copy)
  models/<run>@<target>.log.json        the training log
  models/<run>@<target>.method.json     the method settings resolved at run time
  models/<run>@<target>.adapter/        a LoRA run's adapter before merging
  quantized/<model>@<target>/<quantizer>/   the audit's cache of quantized models (codes, audit/cache.py)
  relearned/<model>@<target>/<column>/      the audit's cache of relearned models
  hub/<model>/README.md          the model card `push` rendered
  hub/<model>/<quantizer>/       a quantized variant made loadable for `push --with-quantized`
```

`<target>` is a target's label (`NATURAL`, `GRID_ALIGNED`, `AUDITED_TARGET` or a recipe's
`model.name`; `NO_TARGET` for the retrain model's rows). Folders an older version wrote under other
labels (`grid` for the grid-aligned copy, `natural` for the target of an audit) are read as they are:
results and audited.json lines get today's labels (`relabel`), and each model's files are
found under their old names where only those exist (`located`).

Every JSON or YAML file here is written atomically (a temporary file, then a rename), so a killed
run leaves either the old file or the new one, never half of one. One process writes a run folder
at a time: a run claims it with an exclusive `flock` on `.lock`, which the kernel drops when the
holder exits (a crash or a kill included), so a lock left by a dead run is never stale.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llm_unlearn.errors import UserError, writing

#: the user's target when the run unlearns it or grid-aligns a copy of it
NATURAL = "natural"
#: the copy of the target whose Linear weights sit on a low-bit grid (a recipe's model.grid_align)
GRID_ALIGNED = "grid-aligned"
#: the user's target when the run only audits checkpoints unlearned elsewhere: whether it was trained
#: normally or released on a grid is not known here (a recipe's model.name can say)
AUDITED_TARGET = "target"
#: the target column of rows that belong to no target (the retrain model)
NO_TARGET = "-"
#: the grid-aligned target's label in run folders of older versions
LEGACY_GRID = "grid"
#: a name that becomes part of a folder name: a run, an audited model, a target label, a column
NAME_PATTERN = r"^[A-Za-z0-9_.+-]+$"


def target_label(name: str | None, unlearns: bool, grid_aligned: bool) -> str:
    """The label of the user's target: `name` (a recipe's model.name) when given; else `NATURAL` when
    the run unlearns it or makes a grid-aligned copy beside it (it is then the one trained normally),
    else `AUDITED_TARGET`: an audit of checkpoints unlearned elsewhere knows nothing of how the target
    was trained."""
    if name is not None:
        return name
    return NATURAL if unlearns or grid_aligned else AUDITED_TARGET


def relabel(target: str, user_target: str | None) -> str:
    """`target` from a results or audited.json line of any version, as today labels it: `grid` is
    `GRID_ALIGNED`; a run has one user target, so any other label but `GRID_ALIGNED` and `NO_TARGET`
    is that target's, now `user_target` (an audit's target was `natural` before it was
    `AUDITED_TARGET`); kept as written when `user_target` is None (a folder no run wrote)."""
    if target == LEGACY_GRID:
        return GRID_ALIGNED
    if target in (GRID_ALIGNED, NO_TARGET) or user_target is None:
        return target
    return user_target


def located(parent: Path, model: str, suffix: str = "") -> Path:
    """`parent/<model><suffix>` for `model` = RUN@TARGET, or the name an older version gave it
    (RUN@grid for the grid-aligned target, RUN@natural for any other user target) where only that
    exists: a resumed old run then finds its checkpoints and caches instead of making them again."""
    path = parent / f"{model}{suffix}"
    run, _, target = model.rpartition("@")
    if path.exists() or not run or target in (NATURAL, NO_TARGET, LEGACY_GRID):
        return path
    old = parent / f"{run}@{LEGACY_GRID if target == GRID_ALIGNED else NATURAL}{suffix}"
    return old if old.exists() else path


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    with writing(path):
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


#: the run folders this process has claimed, with the descriptor holding each one's lock
_CLAIMED: dict[Path, int] = {}


@dataclass(frozen=True)
class RunFolder:
    root: Path

    # --- files of the whole run ---
    @property
    def recipe(self) -> Path:
        return self.root / "recipe.yaml"

    @property
    def log(self) -> Path:
        return self.root / "run.log"

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
    def certificate(self) -> Path:
        return self.root / "certificate.json"

    @property
    def hashes(self) -> Path:
        """The memo of files' sha256 (`filehash.HashMemo`); a folder of an older version has none."""
        return self.root / "hashes.json"

    def require_run(self) -> None:
        """Refuse, in one line, a folder that holds no run (its recipe.yaml and results.jsonl)."""
        if not self.results.is_file() or not self.recipe.is_file():
            raise UserError(
                f"{self.root}: no recipe.yaml and results.jsonl here; give the folder a run wrote"
            )

    def require_certificate(self) -> Path:
        """certificate.json, refused in one line where the folder has none."""
        if not self.certificate.is_file():
            raise UserError(
                f"{self.root}: no certificate.json here; give the folder a run wrote (`llm-unlearn report "
                f"{self.root}` writes one for a run from before certificates)"
            )
        return self.certificate

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
        return located(self.models, model)

    def trainer_scratch(self, model: str) -> Path:
        return self.models / f"{model}.trainer"

    def training_log(self, model: str) -> Path:
        return located(self.models, model, ".log.json")

    def method_file(self, model: str) -> Path:
        return located(self.models, model, ".method.json")

    def adapter(self, model: str) -> Path:
        return located(self.models, model, ".adapter")

    @property
    def quantized_root(self) -> Path:
        """The audit's cache of quantized models: `<model>@<target>/<quantizer>/` below it."""
        return self.root / "quantized"

    def quantized(self, model: str) -> Path:
        """The quantized variants of `model` (RUN@TARGET), one folder per quantizer."""
        return located(self.quantized_root, model)

    def relearned(self, model: str, column: str) -> Path:
        return located(self.root / "relearned", model) / column

    def column_cache(self, model: str, column: str) -> Path | None:
        """The cached product of `model` (RUN@TARGET) under `column`, in whichever cache holds it
        (a quantized cell or a relearned checkpoint); None where neither does (`fp`, a cell never made)."""
        found = [p for p in (self.quantized(model) / column, self.relearned(model, column)) if p.is_dir()]
        return found[0] if found else None

    def hub_card(self, model: str) -> Path:
        return self.root / "hub" / model / "README.md"

    def hub_quantized(self, model: str, quantizer: str) -> Path:
        """The loadable checkpoint `push --with-quantized` makes of a cached cell (audit/cache.py)."""
        return self.root / "hub" / model / quantizer

    # --- target labels ---
    @property
    def target_label(self) -> str | None:
        """The label of the user's target, as this folder's recipe.yaml sets it; None where no
        recipe.yaml with a model section says (a folder no run wrote)."""
        recipe = self.read_recipe() or {}
        model = recipe.get("model")
        if not isinstance(model, dict):
            return None
        return target_label(model.get("name"), bool(recipe.get("method")), bool(model.get("grid_align")))

    @property
    def lock(self) -> Path:
        return self.root / ".lock"

    # --- one writer at a time ---
    def claim(self) -> None:
        """Hold this folder for this process until `release` or its exit; another run writing it now
        is a one-line refusal naming that run."""
        if self.root in _CLAIMED:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise UserError(
                f"output.dir {self.root}: another run ({holder}) is writing this folder; wait for it to "
                "finish, or choose another output.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}".encode())
        _CLAIMED[self.root] = fd

    def release(self) -> None:
        """Let another run write this folder (a no-op where this process holds no claim)."""
        fd = _CLAIMED.pop(self.root, None)
        if fd is not None:
            os.close(fd)  # closing the descriptor drops its flock

    # --- typed reads and writes ---
    def read_recipe(self) -> dict[str, Any] | None:
        """The run's recipe.yaml as a mapping; None where there is none. One torn by a crash of an
        older version mid-write, or by a hand edit, is the user's to restore: refused in one line."""
        if not self.recipe.is_file():
            return None
        try:
            recipe = yaml.safe_load(self.recipe.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as err:
            problem = str(err).splitlines()[0]
            raise UserError(
                f"{self.recipe}: not readable YAML ({problem}); restore it, or delete the run folder to "
                "start over"
            ) from None
        if not isinstance(recipe, dict):
            raise UserError(
                f"{self.recipe}: not a recipe mapping; restore it, or delete the run folder to start over"
            )
        return recipe

    def write_recipe(self, resolved: dict[str, Any]) -> None:
        write_atomic(self.recipe, yaml.safe_dump(resolved, sort_keys=False))

    def read_audited(self) -> list[dict[str, str]]:
        """audited.json's entries, with today's target labels (`relabel`)."""
        entries = read_json(self.audited) if self.audited.is_file() else []
        label = self.target_label
        return [{**e, "target": relabel(e["target"], label)} for e in entries]

    def write_audited(self, models: list[dict[str, str]]) -> None:
        write_json(self.audited, models)

    def audited_models(self) -> dict[str, dict[str, str]]:
        """The models the run audited from elsewhere (its recipe's `models:`), by RUN@TARGET: their
        audited.json entries (checkpoint and source)."""
        given = {m["name"] for m in (self.read_recipe() or {}).get("models", [])}
        return {f"{e['name']}@{e['target']}": e for e in self.read_audited() if e["name"] in given}

    def current_name(self, model: str) -> str:
        """RUN@TARGET with the target as today labels it (an older run's `npo@grid` is `npo@grid-aligned`)."""
        run, at, target = model.rpartition("@")
        return f"{run}@{relabel(target, self.target_label)}" if at else model

    def unlearned_models(self) -> list[str]:
        """The `RUN@TARGET` names of the run's unlearned checkpoints: those it made (with resolved
        method settings) and those it audited from elsewhere, by today's target labels."""
        made = [p.name for p in self.models.glob("*@*") if p.is_dir() and self.method_file(p.name).is_file()]
        return sorted({self.current_name(name) for name in made} | set(self.audited_models()))

    def choose_model(self, model: str | None) -> str:
        """`model` (`push --model RUN@TARGET`, an older run's target label too) by its current name,
        or the run's only unlearned model; anything else refused in one line naming the choices."""
        names = self.unlearned_models()
        if model is None and len(names) == 1:
            return names[0]
        current = model and self.current_name(model)
        if current not in names:
            given = f"--model {model!r} is not one of" if model else "choose with --model one of"
            raise UserError(f"{self.root}: {given} its unlearned models: {', '.join(names) or 'none'}")
        return current

    def read_method(self, model: str) -> dict[str, Any] | None:
        path = self.method_file(model)
        return read_json(path) if path.is_file() else None
