"""Loading, saving and making the models a run needs: targets, retrain models, grid copies.

Checkpoints are plain `save_pretrained` folders (safetensors + tokenizer), written to a
temporary folder and renamed, so a folder that exists is complete and a killed run resumes.
"""

from __future__ import annotations

import hashlib
import json
import math
import mmap
import os
import shutil
import struct
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError, safe_open
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)
from transformers.dynamic_module_utils import get_class_from_dynamic_module
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.utils import logging as hf_logging

from llm_unlearn.cachedir import cache_dir
from llm_unlearn.data.collate import LMDataset, UnlearningCollator, chunk_texts
from llm_unlearn.data.corpora import DEMO, load_muse
from llm_unlearn.display import console, quiet
from llm_unlearn.errors import UserError, writing
from llm_unlearn.filehash import sha256_file
from llm_unlearn.locations import check_checkpoint, check_source, split_revision
from llm_unlearn.quant import get_quantizer

if TYPE_CHECKING:
    from transformers import Trainer

#: the embedded demo's tiny Llama (~1.2 M parameters) and how its target is trained
DEMO_TOKENIZER_VOCAB = 1024
DEMO_CONFIG = dict(
    hidden_size=128,
    intermediate_size=384,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=4,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)
DEMO_TRAINING = dict(
    num_train_epochs=60,
    learning_rate=3e-3,
    lr_scheduler_type="cosine",
    warmup_steps=20,
    per_device_train_batch_size=16,
    weight_decay=0.0,
    seed=0,
)
DEMO_MAX_LENGTH = 128
#: the quick demo's target (`llm-unlearn demo --quick`): the retrain model trained on forget + retain
#: for 15 more epochs (390 steps where the demo's target takes 1,560), as MUSE's targets are a base
#: model fine-tuned on the forget set. It knows VerbMem 67, KnowMem 45 on forget, 61 on retain (the
#: demo's target: 66, 65, 66; eval/results/demo_quick_report.md and demo_report.md, fp).
DEMO_QUICK_TRAINING = dict(DEMO_TRAINING, num_train_epochs=15)


def eval_placement(device: torch.device, device_map: str | None = None) -> dict[str, Any]:
    """`from_pretrained`'s keywords for evaluating (and quantizing) a model on `device`.

    On the CPU: float32, where bf16 matmuls are slow and the metrics were checked against MUSE's
    code. On an accelerator: the checkpoint's own dtype (`"auto"`: a bf16 7B model stays 14 GB,
    not 28) on that device, or spread over every visible one with `device_map="auto"` for a model
    that one does not hold.
    """
    if device.type == "cpu":
        return {"dtype": torch.float32}
    return {"dtype": "auto", "device_map": device_map or device}


def load_model(
    name_or_path: str | Path, field: str = "model", placement: dict[str, Any] | None = None
) -> PreTrainedModel:
    """A causal LM from a local folder or a Hub id: float32 on the CPU (training starts there), or
    where `placement` (`eval_placement`) puts it.

    Weights are read from safetensors only: a pickle (`pytorch_model.bin`) can run code when loaded,
    so `resolve_checkpoint(..., allow_pickle=True)` converts one once, when the user trusts it.
    """
    check_source(name_or_path, field)
    _refuse_pickle_only(Path(str(name_or_path)).expanduser(), field)
    try:
        with _no_progress_bars():
            return AutoModelForCausalLM.from_pretrained(
                str(name_or_path), use_safetensors=True, **(placement or {"dtype": torch.float32})
            )
    # a folder or id without a model, or an unreadable or corrupt one
    except (OSError, ValueError, SafetensorError) as err:
        raise UserError(f"{field}: cannot load {name_or_path!r}: {_first_line(err)}") from None


def model_skeleton(path: Path) -> PreTrainedModel:
    """The architecture of the checkpoint at `path` on the meta device: every shape, no weights, no
    memory, for checks made before a run trains anything."""
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(path)))


class CheckpointTensors(Mapping[str, torch.Tensor]):
    """The tensors of a saved checkpoint (one or several safetensors files) by name, each read from
    disk when asked for, so a whole model never has to be in memory to compare or diagnose it."""

    def __init__(self, folder: Path) -> None:
        self._file: dict[str, Path] = {}
        for path in sorted(Path(folder).expanduser().glob("*.safetensors")):
            try:
                with safe_open(str(path), framework="pt") as f:
                    self._file |= dict.fromkeys(f.keys(), path)
            except (SafetensorError, OSError) as err:  # changed since it was resolved, or never resolved
                raise UserError(f"{path} is not a readable safetensors file: {_first_line(err)}") from None

    def __getitem__(self, key: str) -> torch.Tensor:
        with safe_open(str(self._file[key]), framework="pt") as f:
            return f.get_tensor(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._file)

    def __len__(self) -> int:
        return len(self._file)


PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def _pickle_only(folder: Path) -> list[str]:
    """The pickle weight files of a folder that has no safetensors weights ([] otherwise)."""
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return []
    return sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)


def _refuse_pickle_only(folder: Path, field: str) -> None:
    pickles = _pickle_only(folder)
    if pickles:
        raise UserError(
            f"{field}: {folder} holds weights only as pickle ({pickles[0]}), which can run code when "
            "loaded; convert it to safetensors, or allow it once with --allow-pickle (model.allow_pickle)"
        )


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return (lines[0] if lines else type(err).__name__)[:200]


def load_tokenizer(name_or_path: str | Path, field: str = "model") -> PreTrainedTokenizerBase:
    """The model's tokenizer, with a pad token (the EOS token where the model defines none)."""
    check_source(name_or_path, field)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except (OSError, ValueError) as err:  # a folder or id without a model, or an unreadable one
        raise UserError(
            f"{field}: cannot load a tokenizer from {name_or_path!r}: {_first_line(err)}"
        ) from None
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise UserError(
                f"{field}: the tokenizer of {name_or_path!r} has neither a pad nor an eos token; "
                "set one (e.g. tokenizer.pad_token = ...) and save it"
            )
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    # transformers draws a bar per load and save: one per audit cell would drown the audit's own bar
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


#: what a Hub download fetches: weights as safetensors only (never pickles), configs, tokenizer files
HUB_FILES = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.model", "*.txt", "*.tiktoken"]
ADAPTER_CONFIG = "adapter_config.json"


@dataclass(frozen=True)
class Checkpoint:
    """A model a user named, resolved to local files: a full checkpoint folder, or a PEFT adapter
    folder with the checkpoint of its base model (merged by `materialize` before the audit)."""

    spec: str  # what the user wrote
    path: Path  # the model folder, or the adapter folder
    base: Checkpoint | None = None  # the adapter's base model

    @property
    def model(self) -> Path:
        """The folder whose config and tokenizer describe the model (the base of an adapter)."""
        return self.base.model if self.base is not None else self.path


def resolve_checkpoint(
    spec: str | Path, field: str, allow_pickle: bool = False, trust_remote_code: bool = False
) -> Checkpoint:
    """The local files of `spec`: a checkpoint folder, a Hub id with an optional `@revision`
    (downloaded once into the Hub cache, safetensors only), a PEFT adapter folder or Hub id (its
    base read from `adapter_config.json` and resolved the same way), or a `.gguf` file (a local
    file, or `org/name/FILE.gguf` on the Hub; dequantized once to a cached float32 checkpoint).
    A checkpoint whose weights are only pickles is refused, or with `allow_pickle` converted once
    to a cached safetensors copy (everything after this step reads safetensors only). A checkpoint
    whose architecture is its own Python code is refused, or with `trust_remote_code` its code is
    run and registered with transformers (`_register_remote_code`).
    Every problem is a one-line UserError naming `field`."""
    text = str(spec)
    local = Path(text).expanduser()
    check_checkpoint(text, field)  # a missing path: refused as the command line refuses it, before torch
    if text.endswith(".gguf"):
        if local.is_file():
            return Checkpoint(text, gguf_checkpoint(local.parent, local.name))
        repo, _, file = text.rpartition("/")
        return Checkpoint(text, gguf_checkpoint(repo, file))
    folder = (
        local if local.is_dir() else _download(*split_revision(text), field, allow_pickle, trust_remote_code)
    )
    if (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file():
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{field}: {folder / ADAPTER_CONFIG} names no base_model_name_or_path")
        base_field = f"{field} (the adapter's base model)"
        return Checkpoint(text, folder, resolve_checkpoint(base, base_field, allow_pickle, trust_remote_code))
    if not (folder / "config.json").is_file():
        raise UserError(f"{field}: {text!r} holds no config.json; give a transformers checkpoint folder")
    _remote_code(folder, field, trust_remote_code)
    if _pickle_only(folder):
        if not allow_pickle:
            _refuse_pickle_only(folder, field)
        folder = _safetensors_copy(folder, field)
    if not any(folder.glob("*.safetensors")):  # or the run would claim its folder, then fail to load it
        raise UserError(
            f"{field}: {text!r} holds a config.json but no weights (*.safetensors); give a complete "
            "checkpoint folder"
        )
    for weights in folder.glob("*.safetensors"):  # headers only: a truncated or foreign file fails here
        try:
            with safe_open(str(weights), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise UserError(
                f"{field}: {weights} is not a readable safetensors file: {_first_line(err)}"
            ) from None
    return Checkpoint(text, folder)


def _remote_code(folder: Path, field: str, trusted: bool) -> None:
    """A checkpoint whose architecture is its own Python (config.json's `auto_map` with a
    `model_type` transformers does not have) is refused in one line naming the option, not left
    to transformers (which would ask on stdin, then fail); with `trusted` its code is registered."""
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{field}: {path} is not valid JSON ({err}); restore it from its source") from None
    if not isinstance(config, dict):
        raise UserError(f"{field}: {path} is not a JSON object; restore it from its source")
    model_type = config.get("model_type")
    if "auto_map" not in config or model_type in CONFIG_MAPPING:
        return
    if not trusted:
        raise UserError(
            f"{field}: {folder} needs its own Python code to load (config.json auto_map, model_type "
            f"{model_type!r} unknown to transformers), which llm-unlearn runs only when told: if you "
            "trust that code, pass --trust-remote-code (model.trust_remote_code: true)"
        )
    _register_remote_code(folder, config, field)


def _register_remote_code(folder: Path, config: dict[str, Any], field: str) -> None:
    """Run the checkpoint's own configuration and model code, which the user trusts, and register
    its classes with transformers' Auto classes (`AutoConfig.register`,
    `AutoModelForCausalLM.register`, as transformers documents for custom models): every later load
    in this process (the audit's cells, relearning, the kernels, any `from_pretrained` of this
    folder or of a cell saved from it) then finds the architecture without `trust_remote_code`
    being passed down to it, and a resumed run registers it again here."""
    auto_map = config["auto_map"]
    missing = [k for k in ("AutoConfig", "AutoModelForCausalLM") if k not in auto_map]
    if missing:
        raise UserError(
            f"{field}: {folder / 'config.json'} auto_map names no {missing[0]}; a causal LM with its "
            "own code maps both AutoConfig and AutoModelForCausalLM"
        )
    try:
        config_class = get_class_from_dynamic_module(auto_map["AutoConfig"], str(folder))
        model_class = get_class_from_dynamic_module(auto_map["AutoModelForCausalLM"], str(folder))
        AutoConfig.register(config["model_type"], config_class, exist_ok=True)
        AutoModelForCausalLM.register(config_class, model_class, exist_ok=True)
    # the checkpoint's own code failed to import or does not match its config: any error it raises
    except Exception as err:
        raise UserError(
            f"{field}: the code of {folder} (trust_remote_code) failed: {type(err).__name__}: "
            f"{_first_line(err)}; fix it or give a checkpoint of an architecture transformers has"
        ) from None


def _safetensors_copy(folder: Path, field: str) -> Path:
    """A pickle-only checkpoint converted once to safetensors, cached under its files' hash."""
    digest = hashlib.sha256("".join(sha256_file(folder / n) for n in _pickle_only(folder)).encode())
    dest = cache_dir() / "from_pickle" / digest.hexdigest()[:12]
    if not dest.exists():
        try:
            with _no_progress_bars():
                model = AutoModelForCausalLM.from_pretrained(str(folder), use_safetensors=False)
        except (OSError, ValueError, RuntimeError) as err:
            raise UserError(
                f"{field}: cannot load the pickle weights of {folder}: {_first_line(err)}"
            ) from None
        save_checkpoint(model, load_tokenizer(folder, field=field), dest)
    return dest


def _download(
    repo: str, revision: str | None, field: str, allow_pickle: bool, trust_remote_code: bool
) -> Path:
    from huggingface_hub import snapshot_download

    # a checkpoint's own code comes down only where the user trusts it
    patterns = HUB_FILES + (["*.bin"] if allow_pickle else []) + (["*.py"] if trust_remote_code else [])
    try:
        return Path(snapshot_download(repo, revision=revision, allow_patterns=patterns))
    # huggingface_hub signals an unknown repo or revision, no network or no cached copy with many
    # exception types; each is the user's to fix (the id, the revision, the network or HF_HUB_OFFLINE)
    except Exception as err:
        at = f"@{revision}" if revision else ""
        detail = " ".join(str(err).split())[:200]
        raise UserError(
            f"{field}: cannot fetch {repo}{at} from the Hub: {type(err).__name__}: {detail}"
        ) from None


def _download_file(repo: str, filename: str) -> Path:
    """`filename` of the Hub repo `repo`, downloaded once into the Hub cache."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo, filename))
    except Exception as err:  # as `_download`: every failure is the user's (the name, the network)
        detail = " ".join(str(err).split())[:200]
        raise UserError(
            f"model.gguf_file: cannot fetch {filename!r} of {repo} from the Hub: "
            f"{type(err).__name__}: {detail}"
        ) from None


def materialize(checkpoint: Checkpoint, dest: Path) -> Path:
    """The folder of a full checkpoint for `checkpoint`: the folder itself, or for an adapter the
    base model with the adapter merged into it, saved once to `dest` (as a LoRA run's model is
    audited: the adapter merged before quantizing)."""
    if checkpoint.base is None:
        return checkpoint.path
    if not dest.exists():
        base = materialize(checkpoint.base, dest.with_name(dest.name + ".base"))
        merged = load_merged(base, checkpoint.path)
        own = (checkpoint.path / "tokenizer_config.json").is_file()
        tokenizer = load_tokenizer(checkpoint.path if own else checkpoint.model)
        save_checkpoint(merged, tokenizer, dest)
    return dest


def load_merged(base: Path, adapter: Path, placement: dict[str, Any] | None = None) -> PreTrainedModel:
    """The checkpoint `base` with the PEFT adapter saved in `adapter` merged into its weights (for
    LoRA W + (alpha / r)·B·A, peft's `merge_and_unload`), placed as `load_model` places it."""
    from peft import PeftModel  # peft is slow to import; only adapters need it

    return PeftModel.from_pretrained(load_model(base, placement=placement), str(adapter)).merge_and_unload()


#: config fields whose difference makes two checkpoints different architectures
ARCHITECTURE_FIELDS = (
    "model_type", "vocab_size", "hidden_size", "num_hidden_layers", "intermediate_size",
    "num_attention_heads", "num_key_value_heads", "tie_word_embeddings",
)  # fmt: skip


def check_same_model_family(
    target: Path, other: Path, field: str, target_field: str = "model.target"
) -> None:
    """Refuse, in one line, a checkpoint whose architecture or tokenizer differs from the target's:
    its cells would compare different models token by token."""
    configs = []
    for path, name in ((target, target_field), (other, field)):
        check_source(path, name)
        try:
            configs.append(AutoConfig.from_pretrained(str(path)))
        except (OSError, ValueError) as err:
            raise UserError(f"{name}: cannot read the config of {str(path)!r}: {_first_line(err)}") from None
    for key in ARCHITECTURE_FIELDS:
        mine, theirs = (getattr(c, key, None) for c in configs)
        if mine != theirs:
            raise UserError(
                f"{field}: architecture differs from {target_field}'s: {key} {theirs!r} vs {mine!r}; "
                "compare models made from the same target"
            )
    vocabs = [
        load_tokenizer(target, field=target_field).get_vocab(),
        load_tokenizer(other, field).get_vocab(),
    ]
    if vocabs[0] != vocabs[1]:
        diff = sorted(set(vocabs[0].items()) ^ set(vocabs[1].items()))
        raise UserError(
            f"{field}: tokenizer differs from {target_field}'s: {len(vocabs[1])} vs {len(vocabs[0])} "
            f"tokens, e.g. {diff[0][0]!r}; compare models that share the target's tokenizer"
        )


def gguf_checkpoint(source: str | Path, gguf_file: str) -> Path:
    """A plain float32 safetensors checkpoint of the GGUF file `gguf_file` in `source` (a folder or
    a Hub id, from which that one file is downloaded), converted once and cached under the file's
    content hash. Its header is checked (`check_gguf_header`) before transformers parses any of it.

    transformers dequantizes GGUF weights on load (needs the `gguf` package), so the checkpoint holds
    exactly the released low-bit values, e.g. on llama.cpp's Q4_1 grid (`rtn-w4-g32-min`).
    """
    check_source(source, "model.target")
    folder = Path(source).expanduser()
    if folder.is_dir():
        local = folder / gguf_file
        if not local.is_file():
            raise UserError(f"model.gguf_file: {gguf_file!r} not found in {source}")
    else:  # the one file, into the Hub cache: checked like a local one before anything parses it
        local = _download_file(str(source), gguf_file)
    check_gguf_header(local)
    dest = cache_dir() / "gguf" / hashlib.sha256(sha256_file(local).encode()).hexdigest()[:12]
    if dest.exists():
        return dest
    try:
        with _no_progress_bars():
            model = AutoModelForCausalLM.from_pretrained(
                str(local.parent), gguf_file=local.name, dtype=torch.float32
            )
            tokenizer = AutoTokenizer.from_pretrained(str(local.parent), gguf_file=local.name)
    except ImportError as err:  # transformers asks for the gguf package only when it reads a file
        raise UserError(f"model.gguf_file: {err}; pip install gguf") from None
    except (OSError, ValueError) as err:
        raise UserError(
            f"model.gguf_file: cannot load {gguf_file!r} from {source}: {str(err).splitlines()[0]}"
        ) from None
    # The weights are plain floats now: saved with the GGUF quantizer still attached, the folder
    # would claim a quantization it no longer has and transformers would refuse to load it.
    model.hf_quantizer = None
    model.config.quantization_config = None
    del model.config.quantization_config
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return save_checkpoint(model, tokenizer, dest)


#: GGUF's value types of a fixed size, by type id (gguf's GGUFValueType); 8 is STRING and 9 ARRAY
_GGUF_FIXED = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_GGUF_STRING, _GGUF_ARRAY, _GGUF_UINT32 = 8, 9, 4
_GGUF_MAX_DIMS = 4  # GGML_MAX_DIMS


def check_gguf_header(path: Path) -> None:
    """Refuse, in one line, a GGUF file whose header lies (a truncated or crafted file) before
    transformers and gguf-py read it: every count, string length and tensor extent is checked
    against the bytes the file has, so nothing of a claimed size is allocated. The checks are
    llama.cpp's own (`gguf_init_from_file_impl`, ggml/src/gguf.cpp): version 2 or 3, known value
    types, no arrays of arrays, at most 4 dimensions, known tensor types, data within the file."""
    try:
        with path.open("rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 24:
                raise ValueError(f"{size} bytes, less than a GGUF header")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                _walk_gguf(_Cursor(mm, size))
    except ImportError as err:
        raise UserError(f"model.gguf_file: {err}; pip install gguf") from None
    except ValueError as err:
        raise UserError(
            f"model.gguf_file: {path} is not a valid GGUF file: {err}; give a complete, unaltered GGUF file"
        ) from None


@dataclass
class _Cursor:
    """A read position in a mapped file; every read checks its length against the file's first."""

    mm: mmap.mmap
    size: int
    pos: int = 0

    def skip(self, n: int, what: str) -> int:
        if n > self.size - self.pos:
            raise ValueError(f"{what} ({n} bytes at byte {self.pos}) runs past the end ({self.size} bytes)")
        self.pos += n
        return self.pos - n

    def bound(self, count: int, least: int, what: str) -> None:
        """Refuse `count` items of at least `least` bytes each that the rest of the file cannot hold."""
        if count * least > self.size - self.pos:
            raise ValueError(
                f"{count} {what} cannot fit in the {self.size - self.pos} bytes after byte {self.pos}"
            )

    def unpack(self, fmt: str, what: str) -> tuple[Any, ...]:
        return struct.unpack_from(fmt, self.mm, self.skip(struct.calcsize(fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("<Q", what)
        start = self.skip(n, what)
        return self.mm[start : start + n].decode("utf-8", errors="replace")

    def value(self, kind: int, what: str) -> None:
        if kind in _GGUF_FIXED:
            self.skip(_GGUF_FIXED[kind], what)
        elif kind == _GGUF_STRING:
            self.string(what)
        elif kind == _GGUF_ARRAY:
            item, count = self.unpack("<IQ", what)
            if item in _GGUF_FIXED:
                self.skip(count * _GGUF_FIXED[item], what)
            elif item == _GGUF_STRING:
                self.bound(count, 8, f"strings of {what}")
                for _ in range(count):
                    self.string(what)
            else:
                raise ValueError(f"{what}: an array of value type {item}")
        else:
            raise ValueError(f"{what}: unknown value type {kind}")


def _walk_gguf(at: _Cursor) -> None:
    from gguf import GGML_QUANT_SIZES  # optional: only GGUF files need it

    magic, version, tensors, entries = at.unpack("<4sIQQ", "header")
    if magic != b"GGUF" or version not in (2, 3):
        raise ValueError(f"magic {magic!r} version {version}, not GGUF version 2 or 3")
    # each entry takes at least its lengths: a count the file cannot hold is refused before the loop
    at.bound(entries, 12, "metadata entries")
    at.bound(tensors, 24, "tensors")
    alignment = 32
    for _ in range(entries):
        key = at.string("a metadata key")
        (kind,) = at.unpack("<I", f"the type of {key}")
        if key == "general.alignment" and kind == _GGUF_UINT32:
            (alignment,) = struct.unpack_from("<I", at.mm, at.pos)
            if alignment == 0 or alignment & (alignment - 1):
                raise ValueError(f"general.alignment {alignment} is not a power of 2")
        at.value(kind, key)
    extents = []
    for _ in range(tensors):
        name = at.string("a tensor name")
        (dims,) = at.unpack("<I", f"the dimensions of {name}")
        if not 1 <= dims <= _GGUF_MAX_DIMS:
            raise ValueError(f"tensor {name}: {dims} dimensions")
        shape = at.unpack(f"<{dims}Q", f"the shape of {name}")
        kind, offset = at.unpack("<IQ", f"the type of {name}")
        if kind not in GGML_QUANT_SIZES:
            raise ValueError(f"tensor {name}: unknown type {kind}")
        block, block_bytes = GGML_QUANT_SIZES[kind]
        extents.append((name, offset, math.prod(shape) // block * block_bytes))
    data = at.pos + (-at.pos % alignment)
    for name, offset, length in extents:
        if data + offset + length > at.size:
            raise ValueError(f"tensor {name}: {length} bytes at {offset} run past the end ({at.size} bytes)")


def save_checkpoint(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    dest: Path,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Save model (safetensors) and tokenizer to `dest` atomically: all of it or nothing.

    `state_dict` replaces the model's own weights, e.g. the full weights that FSDP / ZeRO-3
    processes gathered together from their shards.
    """
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with writing(dest), _no_progress_bars():
            model.save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # frees what a full disk let it write
        raise
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def grid_align(source: str | Path, quantizer: str, dest: Path) -> Path:
    """Copy `source` with every quantized weight replaced by its dequantized value (W_t = Q(W_t)).

    This is the target of a model released as dequantized low-bit weights: quantizing it again
    with the same quantizer gives it back unchanged, so any unlearning update smaller than half
    a step rounds away (METHODS.md, "Why quantization can undo unlearning").
    """
    if not dest.exists():
        model = get_quantizer(quantizer).quantize_model(load_model(source, field="model.target"))
        save_checkpoint(model, load_tokenizer(source, field="model.target"), dest)
    return dest


def train_causal_lm(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    dest: Path,
    max_length: int,
    what: str,
    **training_args: object,
) -> Path:
    """Fine-tune `model` on `texts` with the standard next-token loss and save it to `dest`;
    `what` names it on the run's display."""
    # imported here: transformers' Trainer pulls in datasets, pandas and peft, a second or more of
    # every process that only loads a model to evaluate it
    from transformers import Trainer, TrainingArguments

    dataset = LMDataset(chunk_texts(texts, tokenizer, max_length))
    args = TrainingArguments(
        output_dir=str(dest.with_name(dest.name + ".trainer")),
        report_to="none",
        save_strategy="no",
        logging_steps=50,
        **training_args,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=UnlearningCollator(tokenizer.pad_token_id),
    )
    return train_and_save(trainer, tokenizer, dest, what)


def train_and_save(
    trainer: Trainer,
    tokenizer: PreTrainedTokenizerBase,
    dest: Path,
    what: str,
    finish: Callable[[PreTrainedModel, dict | None], tuple[PreTrainedModel, dict | None]] | None = None,
) -> Path:
    """Train, gather the whole weights and save them to the checkpoint `dest` (main process only).

    Every process of a launch calls this: under FSDP / ZeRO-3 gathering the sharded weights takes
    all of them. On the main process `finish(model, state_dict)`, when given, runs before the save
    and returns what to save (a LoRA run saves its adapter, then merges it). The Trainer's scratch
    folder is removed; the processes wait for the save, so every one may read `dest` afterwards.
    The training shows as a bar named `what` on the run's display, its logs go to the log file.
    """
    quiet(trainer, what).train()
    state_dict = trainer.accelerator.get_state_dict(trainer.model)
    if trainer.is_world_process_zero():
        network = trainer.accelerator.unwrap_model(trainer.model)
        if finish is not None:
            network, state_dict = finish(network, state_dict)
        save_checkpoint(network, tokenizer, dest, state_dict)
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    return dest


def build_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `texts` (the demo cannot download one).

    Spaces are tokens of their own: MUSE's KnowMem prompt ends in "Answer: " and the answer
    follows the space, so with spaces glued to the next word (GPT-2 style) the prompt would end
    in a token the training text never has there, and a tiny model could not answer at all.
    """
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(" ", behavior="isolated"), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    special = ["<pad>", "<s>", "</s>"]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>")


def demo_checkpoints(names: Collection[str] = ("target", "retrain")) -> dict[str, Path]:
    """The demo's checkpoints among `names`: `target` (trained on forget + retain), `retrain`
    (retain only) and `quick-target` (the quick demo's: the retrain model trained on forget + retain
    for `DEMO_QUICK_TRAINING`'s 15 more epochs, a quarter of the target's cost).

    Built on first use (minutes on 2 CPU cores; only those asked for, and the retrain model under
    the quick target) and cached under a key of the benchmark's text and every setting, so a changed
    benchmark or setting rebuilds them. The tokenizer is trained on every raw split, holdout
    included, as a real tokenizer is trained on broad text: trained on forget + retain only, it
    would give forget names fewer, likelier tokens than holdout names, and membership inference
    would separate them for the wrong reason.
    """
    splits = ("forget", "retain1", "retain2", "holdout")
    raw = load_muse(DEMO, {"raw": splits})
    forget, holdout = raw.get("raw", "forget"), raw.get("raw", "holdout")
    retain = raw.get("raw", "retain1") + raw.get("raw", "retain2")
    settings = [DEMO_CONFIG, DEMO_TRAINING, DEMO_MAX_LENGTH, DEMO_TOKENIZER_VOCAB]
    key_source = json.dumps([forget, retain, holdout, settings])
    root = cache_dir() / "demo" / hashlib.sha256(key_source.encode()).hexdigest()[:12]
    if not (root / "tokenizer").exists():
        save_tokenizer = build_tokenizer(forget + retain + holdout, DEMO_TOKENIZER_VOCAB).save_pretrained
        root.mkdir(parents=True, exist_ok=True)
        save_tokenizer(root / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(root / "tokenizer")
    # the quick target's folder names its own settings: the key above predates it
    quick = hashlib.sha256(json.dumps(DEMO_QUICK_TRAINING).encode()).hexdigest()[:8]
    paths = {"target": root / "target", "retrain": root / "retrain", "quick-target": root / f"quick-{quick}"}
    wanted = [n for n in paths if n in names or (n == "retrain" and "quick-target" in names)]
    for name in wanted:
        if paths[name].exists():
            continue
        if name == "quick-target":
            console.print(f"[bold]training[/] the quick demo target (first run only; cached in {root})")
            torch.manual_seed(int(DEMO_QUICK_TRAINING["seed"]))
            train_causal_lm(
                load_model(paths["retrain"]), tokenizer, forget + retain, paths[name], DEMO_MAX_LENGTH,
                "training the quick demo target", **DEMO_QUICK_TRAINING,
            )  # fmt: skip
        else:
            texts = forget + retain if name == "target" else retain
            train_demo_model(tokenizer, texts, paths[name], DEMO_MAX_LENGTH, DEMO_TRAINING, f"demo {name}")
    return {n: paths[n] for n in names}


def train_demo_model(
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    dest: Path,
    max_length: int,
    training: dict[str, object],
    what: str,
) -> Path:
    """A demo's tiny Llama (DEMO_CONFIG, seeded) trained from scratch on `texts` into `dest`."""
    console.print(f"[bold]training[/] the {what} model (first run only; cached in {dest.parent})")
    torch.manual_seed(int(training["seed"]))
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **DEMO_CONFIG,
    )
    model = LlamaForCausalLM(config)
    return train_causal_lm(model, tokenizer, texts, dest, max_length, f"training the {what}", **training)
