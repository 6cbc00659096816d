"""The audit's cache of quantized models: codes, not copies.

A cell `quantized/<model>@<target>/<quantizer>/` (`RunFolder.quantized`) holds

- `codes.safetensors`: per quantized weight its integer codes, two a byte where the grid has at
  most 16 levels (4-bit) and one a byte up to 256, with the grid's levels, scales and zero points,
  each float in the smallest dtype that holds it exactly;
- `changed.safetensors`: every other tensor the quantizer changed (AWQ's rescaled norms, a weight
  whose codes do not give back its exact value);
- what the quantizer itself keeps (`Quantizer.save_artifacts`: llama.cpp's GGUF file, which
  holds the whole model: a GGUF cell stores nothing else and is rebuilt, codes too, from it);
- `source.json`: the checkpoint the cell was made from, with its weight files' sizes and times;
- `quantizer.json`, written last: the configuration the cell is valid for, and the sha256 of every
  other file of the cell. A cell whose files no longer match (a truncated write, a flipped bit, an
  edit) is rebuilt, and the user told in one line on stderr; a cell of an older version, without
  hashes, is read as it is. The audit checks them through its run folder's memo
  (`filehash.HashMemo`): a file whose size, inode and times are unchanged since it was last read is
  not read again (a GGUF cell is a whole model), while a truncated or rewritten one is.

Tensors the quantizer left as they were are not stored: a cell is rebuilt by loading the
checkpoint once, dequantizing each weight's codes into it and copying the changed tensors. Only
values found bit-identical to the quantized model are left to the codes, so the rebuilt model is
the quantized model exactly and a resumed audit gives identical cells. A 4-bit RTN cell with groups
of 32 is 4 + 2·16/32 = 5 bits a quantized weight (a float16 scale and zero point per group): about
0.16 × a float32 checkpoint's Linear weights.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import save_file
from transformers import PreTrainedModel

from llm_unlearn.errors import UserError, writing
from llm_unlearn.filehash import HashMemo, sha256_files
from llm_unlearn.models import CheckpointTensors, load_model, load_tokenizer, save_checkpoint
from llm_unlearn.quant import Quantizer, WeightCodes, get_quantizer
from llm_unlearn.runfolder import located, write_json

CODES, CHANGED, SOURCE, CONFIG = "codes.safetensors", "changed.safetensors", "source.json", "quantizer.json"
_OWN_FILES = (CODES, CHANGED, SOURCE, CONFIG)
#: the key of quantizer.json that holds the sha256 of each other file of the cell
HASHES = "sha256"


def cell_folder(cache: Path, model: str, quantizer: str) -> Path:
    """The cell of `model` (RUN@TARGET) under `quantizer` in a cache root (`RunFolder.quantized_root`),
    in the folder an older version named where only that exists (`runfolder.located`)."""
    return located(cache, model) / quantizer


def exact_dtype(t: torch.Tensor) -> torch.Tensor:
    """`t` in the narrowest float dtype (float16, bfloat16, float32) that holds every value exactly."""
    for dtype in (torch.float16, torch.bfloat16):
        narrow = t.to(dtype)
        if torch.equal(narrow.to(t.dtype), t):
            return narrow
    return t.float()


def source_stamp(checkpoint: Path) -> dict[str, object]:
    """The checkpoint a cell was made from: its path and each weight file's size and time, so a
    checkpoint trained again at the same path makes its cells stale."""
    checkpoint = checkpoint.expanduser().resolve()
    files = sorted(checkpoint.glob("*.safetensors"))
    stamps = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
    return {"checkpoint": str(checkpoint), "files": stamps}


class CachedCodes(Mapping[str, WeightCodes]):
    """A cell's codes by module name, each read from `codes.safetensors` when asked for: the
    diagnostics walk two models' codes one weight at a time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / CODES
        with safe_open(str(self.path), framework="pt") as f:
            self._names = [k.removesuffix(".codes") for k in f.keys() if k.endswith(".codes")]  # noqa: SIM118

    def __getitem__(self, name: str) -> WeightCodes:
        if name not in self._names:
            raise KeyError(name)
        with safe_open(str(self.path), framework="pt") as f:
            return WeightCodes.from_packed(
                f.get_tensor(f"{name}.codes"),
                levels=f.get_tensor(f"{name}.levels").float(),
                scale=f.get_tensor(f"{name}.scale").float(),
                zero=f.get_tensor(f"{name}.zero").float(),
                shape=torch.Size(f.get_tensor(f"{name}.shape").tolist()),
            )

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


def is_valid(folder: Path, quantizer: Quantizer, checkpoint: Path, memo: HashMemo | None = None) -> bool:
    """Whether `folder` holds this quantizer's cell of `checkpoint` as it is now, its files as they
    were written (hashed through `memo` where one is given). A damaged cell is told on stderr once
    and marked stale (its quantizer.json removed), so it is rebuilt."""
    config, source = folder / CONFIG, folder / SOURCE
    if not (config.is_file() and source.is_file()):
        return False
    try:
        stored, stamp = json.loads(config.read_text()), json.loads(source.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):  # a damaged metadata file: a stale cell
        return False
    hashes = stored.pop(HASHES, None) if isinstance(stored, dict) else None
    if stored != _config(quantizer) or stamp != source_stamp(checkpoint):
        return False
    if hashes is None:  # written by an older version, before cells had hashes
        return True
    now = _hashes(folder, memo)
    damaged = sorted(name for name in set(hashes) | set(now) if hashes.get(name) != now.get(name))
    if damaged:
        print(
            f"llm-unlearn: warning: {folder / damaged[0]} does not match the sha256 stored with its cell "
            "(truncated or changed since it was written); rebuilding the cell",
            file=sys.stderr,
        )
        config.unlink(missing_ok=True)  # another process of a launch may have found it first
        return False
    return True


def _hashes(folder: Path, memo: HashMemo | None = None) -> dict[str, str]:
    """The sha256 of each file of a cell but quantizer.json (which holds them)."""
    files = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != CONFIG]
    return {path.name: digest for path, digest in sha256_files(files, memo).items()}


def save_cell(
    folder: Path,
    quantizer: Quantizer,
    network: PreTrainedModel,
    codes: Mapping[str, WeightCodes],
    checkpoint: Path,
) -> None:
    """Write the cell of `network` (the checkpoint quantized in place, with its `codes`)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).unlink(missing_ok=True)  # a folder without it is recomputed
    with writing(folder):
        quantizer.save_artifacts(folder)
        if not quantizer.artifacts_hold_the_model:
            packed: dict[str, torch.Tensor] = {}
            for name, c in codes.items():
                packed |= {
                    f"{name}.codes": c.packed,
                    f"{name}.levels": exact_dtype(c.levels),
                    f"{name}.scale": exact_dtype(c.scale),
                    f"{name}.zero": exact_dtype(c.zero),
                    f"{name}.shape": torch.tensor(list(c.shape)),
                }
            save_file({k: v.contiguous() for k, v in packed.items()}, str(folder / CODES))
            save_file(_changed_tensors(network, codes, checkpoint), str(folder / CHANGED))
        write_json(folder / SOURCE, source_stamp(checkpoint))
    write_json(folder / CONFIG, {**_config(quantizer), HASHES: _hashes(folder)})


def _changed_tensors(
    network: PreTrainedModel, codes: Mapping[str, WeightCodes], checkpoint: Path
) -> dict[str, torch.Tensor]:
    """The tensors of `network` that neither the checkpoint nor the codes give back bit for bit."""
    source = CheckpointTensors(checkpoint)
    seen, changed = set(), {}
    for key, tensor in network.state_dict().items():
        if tensor.data_ptr() in seen:  # a tied weight: restored through the tensor it shares
            continue
        seen.add(tensor.data_ptr())
        if key in source and torch.equal(source[key].to(tensor.device, tensor.dtype), tensor):
            continue
        module = key.removesuffix(".weight")
        coded = key.endswith(".weight") and module in codes
        if coded and torch.equal(codes[module].dequantize().to(tensor.device, tensor.dtype), tensor):
            continue
        changed[key] = tensor.detach().cpu().contiguous()
    return changed


def load_cell(
    folder: Path, checkpoint: Path, quantizer: Quantizer, placement: dict[str, Any] | None = None
) -> PreTrainedModel:
    """The quantized model of a cell: the checkpoint (placed by `models.eval_placement`, default
    float32 on the CPU) with its codes and changed tensors put in, or the quantizer's own files
    where they hold the model."""
    network = load_model(checkpoint, placement=placement)
    if quantizer.artifacts_hold_the_model:
        quantizer.load_artifacts(folder, network)
        return network
    state = network.state_dict()
    with torch.no_grad():
        for name, c in CachedCodes(folder).items():
            weight = network.get_submodule(name).weight
            weight.copy_(c.dequantize().to(weight.dtype))
        with safe_open(str(folder / CHANGED), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open has no __iter__
                state[key].copy_(f.get_tensor(key))
    return network


def quantized(
    checkpoint: Path,
    quantizer: Quantizer,
    folder: Path,
    placement: dict[str, Any] | None = None,
    memo: HashMemo | None = None,
) -> PreTrainedModel:
    """`checkpoint` under `quantizer` (`fp`, at full precision: the checkpoint itself), from its cell
    in `folder` when valid (`is_valid` through `memo`), else quantized now and cached there; placed
    as `load_cell` places it."""
    if quantizer.at_full_precision:
        return load_model(checkpoint, placement=placement)
    state = PartialState()
    # Under a launch the main process quantizes and writes the cache first, the others then load
    # what it wrote: every process evaluates the very same weights (GPTQ/AWQ on GPUs need not be
    # bit-reproducible) and a calibrated quantizer runs once. Every process must call this.
    with state.main_process_first():
        if is_valid(folder, quantizer, checkpoint, memo):
            return load_cell(folder, checkpoint, quantizer, placement)
        network = load_model(checkpoint, placement=placement)
        codes = quantizer.quantize_with_codes(network)
        if state.is_main_process:  # another process that gets here quantizes in memory only
            save_cell(folder, quantizer, network, codes, checkpoint)
        return network


def ensure_cell(checkpoint: Path, quantizer: Quantizer, folder: Path, memo: HashMemo | None = None) -> None:
    """Quantize `checkpoint` into its cell in `folder` unless that is cached already (`is_valid`)."""
    if not is_valid(folder, quantizer, checkpoint, memo):
        # only its cell is wanted: the model is dropped at once
        quantized(checkpoint, quantizer, folder, memo=memo)


def cached_codes(
    checkpoint: Path, quantizer: Quantizer, folder: Path, memo: HashMemo | None = None
) -> Mapping[str, WeightCodes]:
    """The codes of the cell of `checkpoint` under `quantizer`, quantizing it first if it is not
    cached (`ensure_cell` through `memo`): read one weight at a time from the cell, or from the
    quantizer's own files where they hold the model (those need the model rebuilt once)."""
    ensure_cell(checkpoint, quantizer, folder, memo)
    if quantizer.artifacts_hold_the_model:
        return quantizer.load_artifacts(folder, load_model(checkpoint))
    return CachedCodes(folder)


def materialize(folder: Path, dest: Path) -> Path:
    """A loadable checkpoint (safetensors, with the tokenizer and the quantizer's own files) of the
    cell in `folder`, written to `dest` once: what `push --with-quantized` uploads."""
    if (dest / "config.json").is_file():
        return dest
    checkpoint = Path(json.loads((folder / SOURCE).read_text())["checkpoint"])
    if not (checkpoint / "config.json").is_file():  # the cell holds codes only: it needs its source
        raise UserError(
            f"{folder}: made from {checkpoint}, which is gone; audit that model again to rebuild the cell"
        )
    quantizer = get_quantizer(json.loads((folder / CONFIG).read_text())["name"])
    save_checkpoint(load_cell(folder, checkpoint, quantizer), load_tokenizer(checkpoint), dest)
    for path in folder.iterdir():
        if path.is_file() and path.name not in _OWN_FILES:
            shutil.copy2(path, dest / path.name)
    return dest


def _config(quantizer: Quantizer) -> dict[str, Any]:
    return json.loads(json.dumps(quantizer.config(), default=str))
