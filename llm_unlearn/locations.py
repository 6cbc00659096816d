"""Where a model is, or goes: the checks on a checkpoint's path or Hub id, which need no model library.

Kept apart from `models.py` (which loads checkpoints, and so imports torch and transformers) so
that a missing folder or file is refused in a fraction of a second, before torch is imported; the
loaders run the same checks first.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from llm_unlearn.data.corpora import is_hub_id
from llm_unlearn.errors import UserError


def split_revision(spec: str) -> tuple[str, str | None]:
    """`org/name@rev` -> ("org/name", "rev"); anything else -> (spec, None)."""
    name, sep, revision = spec.rpartition("@")
    return (name, revision) if sep and is_hub_id(name) and revision else (spec, None)


def check_checkpoint(spec: str | Path, field: str) -> None:
    """Refuse, in one line naming `field`, a checkpoint spec that is neither there nor on the Hub: a
    `.gguf` file neither local nor `org/name/FILE.gguf`, a plain file, or a missing folder that is
    no Hub id (`org/name[@revision]`)."""
    text = str(spec)
    local = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not local.is_file() and not is_hub_id(text.rpartition("/")[0]):
            raise UserError(
                f"{field}: GGUF file {text!r} not found (nor a Hub file such as org/name/FILE.gguf)"
            )
        return
    if local.is_dir():
        return
    if local.exists():
        raise UserError(f"{field}: {text!r} is a file; give a checkpoint folder, a Hub id or a .gguf file")
    if not is_hub_id(split_revision(text)[0]):
        raise UserError(f"{field}: folder {text!r} not found (and not a Hub id such as org/name[@revision])")


def check_source(name_or_path: str | Path, field: str) -> None:
    """Refuse, in one line naming `field`, a model or tokenizer source that is neither a local path
    nor shaped like a Hub id."""
    text = str(name_or_path)
    if not Path(text).expanduser().exists() and not is_hub_id(text):
        raise UserError(f"{field}: folder {text!r} not found (and not a Hub id such as org/name)")


def check_repo_id(repo_id: str) -> None:
    """Refuse, in one line naming `--repo-id`, a Hub repository `push` cannot create: not ORG/NAME,
    or a name the Hub refuses (huggingface_hub's own `validate_repo_id`)."""
    problem = "give ORG/NAME (letters, digits, '-', '_', '.'), e.g. my-org/npo-news"
    if repo_id.count("/") != 1:
        raise UserError(f"--repo-id {repo_id!r}: {problem}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise UserError(f"--repo-id {repo_id!r}: {problem}") from None
