"""GGUF files made by llama.cpp itself (`pip install llm-unlearn[llamacpp]`): `gguf-q4_k_m` and kin.

The model is converted with llama.cpp's own `convert_hf_to_gguf.py` (float32 GGUF) and quantized
with llama.cpp's own `llama_model_quantize` (through llama-cpp-python), so the file is the one a
user of llama.cpp would ship, mixes and fallbacks included: the `_M` types give some tensors more
bits (Q4_K_M: Q6_K for half the attn_v/ffn_down and the output), and a tensor whose rows are not
whole 256-element super-blocks (SmolLM2's 576-wide layers) falls back to a 32-block type (with
llama-cpp-python 0.3.36 on SmolLM2-135M: Q6_K -> Q8_0, Q5_K -> Q5_1, Q4_K -> Q5_0, Q3_K/Q2_K ->
Q4_0, so its "Q4_K_M" is mostly Q5_0). The type each tensor got is read back from the file
(`tensor_types`, saved as `gguf_types.json` with the file). The converter stops on a BPE
tokenizer it has no hash for (any newly trained vocabulary, the demo's included); here such a
file is written with llama.cpp's 'default' pre-tokenizer and a warning (`_CONVERT`): the audit
gives llama.cpp token ids, so its numbers do not depend on it.

The quantized model carries the file's weights dequantized by `gguf.quants.dequantize` (llama.cpp's
reference dequantization), every tensor llama.cpp quantized, the token embedding and output head
included, mapped onto the Hugging Face names and un-permuted (the converter interleaves the Q/K
rows of Llama-type models for its RoPE) by transformers' own GGUF loader code.

Grids (Gerganov et al., ggml `ggml-quants.c`), per block of 32 (`_0`, `_1`, IQ4_NL) or sub-block
of 16/32 inside a 256 super-block (K types), with an integer code q:

- Q8_0, Q4_0, Q5_0: w' = d (q - 2^(b-1));  Q6_K, Q3_K: w' = d_j (q - 2^(b-1)), d_j = d * sc_j;
- Q4_1, Q5_1: w' = d q + m;  Q2_K, Q4_K, Q5_K: w' = d_j q - m_j, d_j = d sc_j, m_j = dmin mn_j;
- IQ4_NL: w' = d * T[q], T the 16-value non-uniform table.

As `WeightCodes`: scale |d_j|, zero m_j / d_j, levels the integer range (its mirror image too
where some d_j < 0: llama.cpp signs the scale of the symmetric types). Other types have no codes.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from llm_unlearn.cachedir import cache_dir
from llm_unlearn.errors import UserError
from llm_unlearn.quant.overlap import bucket
from llm_unlearn.quant.registry import Quantizer, WeightCodes, register_quantizer
from llm_unlearn.quant.rtn import quantization_targets

log = logging.getLogger("llm_unlearn.quant.gguf")
#: registry name suffix -> llama.cpp's file type (`LLAMA_FTYPE_MOSTLY_*`)
FTYPES = {
    "q8_0": "Q8_0",
    "q6_k": "Q6_K",
    "q5_k_m": "Q5_K_M",
    "q4_k_m": "Q4_K_M",
    "q4_0": "Q4_0",
    "q3_k_m": "Q3_K_M",
    "q2_k": "Q2_K",
}
MISSING = "GGUF quantizers need llama-cpp-python: pip install 'llm-unlearn[llamacpp]'"
#: running a cell on llama.cpp's own inference (`evaluate_with: kernels`, `kernels/llamacpp.py`)
KERNELS_MISSING = "evaluate_with: kernels runs gguf-* cells on llama.cpp: pip install 'llm-unlearn[llamacpp]'"
#: where llama.cpp's converter is looked for first (a llama.cpp checkout or its vendored copy)
CONVERTER_ENV = "LLM_UNLEARN_LLAMA_CPP"
#: the converter's files in llama-cpp-python's source archive
_CONVERTER_FILES = ("convert_hf_to_gguf.py", "conversion", "gguf-py")
_TOKENIZER_FILES = (
    "tokenizer*",
    "special_tokens_map.json",
    "vocab.*",
    "merges.txt",
    "added_tokens.json",
    "chat_template*",
)


@register_quantizer("gguf")
class GGUFQuantizer(Quantizer):
    """llama.cpp's own quantization, named `gguf-{q8_0,q6_k,q5_k_m,q4_k_m,q4_0,q3_k_m,q2_k}`."""

    pattern = "gguf-{" + ",".join(FTYPES) + "}"
    artifacts_hold_the_model = True  # the GGUF file gives every parameter its value
    kernel_runtime = "llama.cpp"
    kernels = "llama.cpp"  # evaluate_with: kernels runs the cell's GGUF file (`kernels/llamacpp.py`)

    def __init__(self, name: str) -> None:
        ftype = FTYPES.get(name.removeprefix("gguf-"))
        if ftype is None:
            raise ValueError(f"malformed GGUF quantizer name {name!r}; expected {self.pattern}")
        self.name = name
        self.ftype = ftype
        #: GGUF tensor name -> {"type": llama.cpp's type, "hf": Hugging Face name}, after quantizing
        self.tensor_types: dict[str, dict[str, str]] = {}
        self._work: tempfile.TemporaryDirectory[str] | None = None

    def quantize_model(self, model: nn.Module) -> nn.Module:
        self.quantize_with_codes(model)
        return model

    def quantize_with_codes(self, model: nn.Module) -> dict[str, WeightCodes]:
        """Convert, quantize with llama.cpp, and give `model` the file's dequantized weights.

        `model` must come from a saved folder with its tokenizer (the converter writes the
        vocabulary into the file): `model.name_or_path`.
        """
        llama_cpp = _llama_cpp()
        self._work = tempfile.TemporaryDirectory(prefix="llm-unlearn-gguf-")
        work = Path(self._work.name)
        f32 = convert_to_gguf(model, work)
        quantized = work / f"model-{self.ftype}.gguf"
        quantize_file(llama_cpp, f32, quantized, self.ftype)
        f32.unlink()
        codes, self.tensor_types = load_gguf(quantized, model, self.name)
        return codes

    def load_artifacts(self, folder: Path, model: nn.Module) -> dict[str, WeightCodes]:
        """The cell kept in `folder` rebuilt from its GGUF file alone: `model` (the source
        checkpoint) given the file's weights, as `quantize_with_codes` gave them; its codes."""
        codes, self.tensor_types = load_gguf(self.kept_file(folder), model, self.name)
        return codes

    def kept_file(self, folder: Path) -> Path:
        """The GGUF file `save_artifacts` kept in the cell `folder`."""
        files = sorted(folder.glob("*.gguf"))
        if len(files) != 1:
            raise UserError(f"{folder}: expected the one GGUF file {self.name} keeps, found {len(files)}")
        return files[0]

    def save_artifacts(self, folder: Path) -> None:
        """Keep the GGUF file llama.cpp wrote, and the type of each of its tensors, in `folder`."""
        if self._work is None:
            return
        for path in Path(self._work.name).glob("*.gguf"):
            shutil.copy2(path, folder / path.name)
        (folder / "gguf_types.json").write_text(json.dumps(self.tensor_types, indent=1))

    def check_kernels(self) -> None:
        llama_cpp_module()  # missing, it is one line now, not mid-audit

    def config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "method": f"llama.cpp {self.ftype} (convert_hf_to_gguf.py + llama_model_quantize)",
            "library": _version(),
            "ftype": self.ftype,
            "quantized": "every tensor llama.cpp quantizes, token embedding and output included",
            "evaluation": "dequantized weights (float32, gguf.quants.dequantize)",
        }


def converter_dir() -> Path:
    """llama.cpp's converter: $LLM_UNLEARN_LLAMA_CPP, else a copy cached under the model cache
    (`llama.cpp/<llama-cpp-python version>`), taken on first use from the source archive of the
    installed llama-cpp-python (`pip download`), whose vendored llama.cpp is the one it runs."""
    if os.environ.get(CONVERTER_ENV):
        folder = Path(os.environ[CONVERTER_ENV]).expanduser()
        if not (folder / "convert_hf_to_gguf.py").is_file():
            raise UserError(f"{CONVERTER_ENV}={folder} has no convert_hf_to_gguf.py; point it at llama.cpp")
        return folder
    release = _version().split()[-1]
    folder = cache_dir() / "llama.cpp" / release
    if not (folder / "convert_hf_to_gguf.py").is_file():
        _fetch_converter(release, folder)
    return folder


def _fetch_converter(release: str, folder: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        done = subprocess.run([*pip, "-d", tmp, f"llama-cpp-python=={release}"], capture_output=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if done.returncode or not archives:
            raise UserError(
                f"cannot download llama-cpp-python {release}'s source for llama.cpp's converter; "
                f"set {CONVERTER_ENV} to a llama.cpp folder"
            )
        with tarfile.open(archives[0]) as tar:
            root = f"{tar.getnames()[0].split('/')[0]}/vendor/llama.cpp/"
            members = [m for m in tar.getmembers() if m.name.removeprefix(root).startswith(_CONVERTER_FILES)]
            for m in members:
                m.name = m.name.removeprefix(root)
            partial = folder.with_name(folder.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            tar.extractall(partial, members=members, filter="data")
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)


def convert_to_gguf(model: nn.Module, work: Path) -> Path:
    """`model` as a float32 GGUF file written by llama.cpp's `convert_hf_to_gguf.py`."""
    source = Path(getattr(model, "name_or_path", "") or ".")
    tokenizer = [p for pattern in _TOKENIZER_FILES for p in source.glob(pattern)]
    if not tokenizer:
        raise UserError(
            "GGUF quantizers need the model's tokenizer files in its folder (model.name_or_path); "
            f"none in {source}"
        )
    hf = work / "hf"
    model.save_pretrained(hf)
    for path in tokenizer:
        shutil.copy2(path, hf / path.name)
    converter = converter_dir()
    out = work / "model-F32.gguf"
    # the converter's own gguf-py comes first: it must match the converter, not the installed gguf
    paths = [str(converter / "gguf-py"), str(converter), os.environ.get("PYTHONPATH", "")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    command = [sys.executable, "-c", _CONVERT, str(hf), "--outtype", "f32", "--outfile", str(out)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    shutil.rmtree(hf)
    if done.returncode:
        lines = [line for line in done.stderr.splitlines() if line.strip()] or ["no output"]
        raise UserError(f"llama.cpp's convert_hf_to_gguf.py failed: {lines[-1]}")
    if UNRECOGNISED in done.stderr:
        log.warning(
            "llama.cpp's converter does not know the tokenizer of %s (a BPE vocabulary it has no hash "
            "for, as every newly trained one); the GGUF file names the pre-tokenizer 'default'. The "
            "audit is exact (it gives llama.cpp token ids), but llama.cpp would split typed text "
            "differently: register the tokenizer with llama.cpp's convert_hf_to_gguf_update.py "
            "before shipping the file",
            source,
        )
    return out


#: printed by `_CONVERT` when the converter does not recognise the tokenizer's pre-tokenizer
UNRECOGNISED = "llm-unlearn: pre-tokenizer not recognised, written as 'default'"
#: llama.cpp's converter run as its command line, except that a BPE tokenizer whose
#: pre-tokenizer it cannot name (it recognises a tokenizer by the hash of its token ids for a
#: probe text, so any new vocabulary fails, the demo's included) gets llama.cpp's 'default'
#: pre-tokenizer instead of stopping the conversion; nothing else changes
_CONVERT = f"""
import sys
import convert_hf_to_gguf as convert
TextModel = getattr(convert, "TextModel", None) or __import__("conversion.base").base.TextModel
known = TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return known(self, tokenizer)
    except NotImplementedError:
        print({UNRECOGNISED!r}, file=sys.stderr)
        return "default"
TextModel.get_vocab_base_pre = get_vocab_base_pre
sys.argv = ["convert_hf_to_gguf.py", *sys.argv[1:]]
convert.main()
"""


def quantize_file(llama_cpp: Any, source: Path, dest: Path, ftype: str) -> None:
    """llama.cpp's `llama_model_quantize` of `source` to `ftype` (its default parameters)."""
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype}")
    params.nthread = torch.get_num_threads()
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)):
        raise UserError(f"llama.cpp could not quantize {source.name} to {ftype}")


def load_gguf(
    path: Path, model: nn.Module, name: str
) -> tuple[dict[str, WeightCodes], dict[str, dict[str, str]]]:
    """Give `model` the GGUF file's tensors dequantized under its names, one tensor at a time (no
    second copy of the model); return the codes of the quantization targets whose type has a grid,
    and every tensor's type (module doc). Every parameter must get a value (tied ones once)."""
    import gguf
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    reader = gguf.GGUFReader(str(path))
    architecture = reader.fields["general.architecture"].contents()
    processor = TENSOR_PROCESSORS.get(architecture, TensorProcessor)(config=model.config.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    targets = {f"{module}.weight" for module, _ in quantization_targets(model)}

    def hf_order(array: np.ndarray, name: str) -> np.ndarray:  # undo the converter's row permutation
        return processor.process(weights=array, name=name).weights

    own = model.state_dict()
    loaded, codes, types = set(), {}, {}
    for tensor in reader.tensors:
        if tensor.name not in names:
            continue
        hf = names[tensor.name]
        qtype = gguf.GGMLQuantizationType(tensor.tensor_type)
        types[tensor.name] = {"type": qtype.name, "hf": hf}
        weight = gguf.quants.dequantize(tensor.data, qtype)
        with torch.no_grad():
            own[hf].copy_(torch.from_numpy(np.array(hf_order(weight, tensor.name))).reshape(own[hf].shape))
        loaded.add(hf)
        if hf in targets and qtype.name in _GRIDS:
            codes[hf.removesuffix(".weight")] = gguf_codes(
                tensor.data, qtype.name, weight, tensor.name, hf_order
            )
    missing = [key for key, _ in model.named_parameters() if key not in loaded]
    if missing:
        raise UserError(f"{name}: llama.cpp's file has no tensor for {missing[0]}")
    return codes, types


def gguf_codes(data: np.ndarray, qtype: str, weight: np.ndarray, name: str, hf_order: Any) -> WeightCodes:
    """The codes of one quantized tensor [rows, cols] (module doc), in Hugging Face row order.

    The scales come from the blocks' bytes; each code is the level nearest to w' / d_j + zero,
    which is exactly the stored q because w' is d_j q - m_j up to float32 rounding.
    """
    group, values, min_offset = _GRIDS[qtype]
    rows, cols = weight.shape
    blocks = np.ascontiguousarray(data).reshape(-1, _TYPE_SIZE[qtype])
    d, m = _block_scales(qtype, blocks)
    shape = (rows, cols // group)
    d, m = d.reshape(shape), m.reshape(shape) if m is not None else None
    levels = torch.tensor(values, dtype=torch.float32)
    if min_offset:  # d_j >= 0; a zero d_j (a constant sub-block): scale 1, code 0 stands for -m_j
        scale = np.where(d == 0, 1, d).astype(np.float32)
        zero = (m / scale).astype(np.float32)
    else:
        if (d < 0).any():  # d_j (q - c) = |d_j| (c - q): the mirrored codes join the grid
            levels = torch.unique(torch.cat([levels, -levels]), sorted=True)
        scale = np.maximum(np.abs(d), np.finfo(np.float32).tiny).astype(np.float32)
        zero = np.zeros_like(scale)
    x = weight.reshape(rows, cols // group, group) / scale[..., None] + zero[..., None]
    q = bucket(torch.from_numpy(np.ascontiguousarray(x)), levels).numpy()
    q, scale, zero = (hf_order(np.ascontiguousarray(a), name) for a in (q, scale, zero))
    return WeightCodes(
        codes=torch.from_numpy(q.reshape(-1, group).astype(np.int64)),
        levels=levels,
        scale=torch.from_numpy(scale.reshape(-1).copy()),
        zero=torch.from_numpy(zero.reshape(-1).copy()),
        shape=torch.Size((rows, cols)),
    )


#: per type: (group size, levels of q - offset (d_j > 0), min-offset grid)
_IQ4_NL = (-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113)
_GRIDS: dict[str, tuple[int, tuple[int, ...], bool]] = {
    "Q8_0": (32, tuple(range(-128, 128)), False),
    "Q5_0": (32, tuple(range(-16, 16)), False),
    "Q4_0": (32, tuple(range(-8, 8)), False),
    "IQ4_NL": (32, _IQ4_NL, False),
    "Q5_1": (32, tuple(range(32)), True),
    "Q4_1": (32, tuple(range(16)), True),
    "Q6_K": (16, tuple(range(-32, 32)), False),
    "Q3_K": (16, tuple(range(-4, 4)), False),
    "Q5_K": (32, tuple(range(32)), True),
    "Q4_K": (32, tuple(range(16)), True),
    "Q2_K": (16, tuple(range(4)), True),
}
_TYPE_SIZE = {"Q8_0": 34, "Q5_0": 22, "Q4_0": 18, "IQ4_NL": 18, "Q5_1": 24, "Q4_1": 20}
_TYPE_SIZE |= {"Q6_K": 210, "Q3_K": 110, "Q5_K": 176, "Q4_K": 144, "Q2_K": 84}


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, start : start + 2]).view(np.float16).astype(np.float32)


def _block_scales(qtype: str, blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Per group: d_j and (min-offset grids) m_j with w' = d_j q - m_j, as `gguf.quants` reads them."""
    import gguf

    if qtype in ("Q8_0", "Q5_0", "Q4_0", "IQ4_NL"):
        return _f16(blocks, 0), None
    if qtype in ("Q5_1", "Q4_1"):
        return _f16(blocks, 0), -_f16(blocks, 2)
    if qtype == "Q6_K":
        sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
        return _f16(blocks, 208) * sc, None
    if qtype == "Q3_K":  # 6-bit scales: low nibbles in bytes 0-7, high 2 bits in 8-11
        raw = blocks[:, 96:108]
        low = (raw[:, :8].reshape(-1, 1, 8) >> np.array([0, 4], np.uint8).reshape(1, 2, 1)).reshape(-1, 16)
        high = raw[:, 8:].reshape(-1, 1, 4) >> np.array([0, 2, 4, 6], np.uint8).reshape(1, 4, 1)
        sc = (low & 0x0F) | ((high.reshape(-1, 16) & 0x03) << 4)
        return _f16(blocks, 108) * (sc.astype(np.int8) - 32).astype(np.float32), None
    if qtype == "Q2_K":
        sc = blocks[:, :16]
        return _f16(blocks, 80) * (sc & 0xF).astype(np.float32), _f16(blocks, 82) * (sc >> 4).astype(
            np.float32
        )
    sc, mn = gguf.quants.Q4_K.get_scale_min(blocks[:, 4:16])  # Q4_K and Q5_K share the header
    return _f16(blocks, 0) * sc.astype(np.float32), _f16(blocks, 2) * mn.astype(np.float32)


#: the no-op log callback handed to llama.cpp (kept referenced: llama.cpp calls it later)
_SILENCE: list[Any] = []


def llama_cpp_module() -> Any:
    """The `llama_cpp` package that runs a GGUF cell (`evaluate_with: kernels`), or a one-line
    UserError naming the extra that installs it."""
    try:
        import llama_cpp
    except ImportError:
        raise UserError(KERNELS_MISSING) from None
    return llama_cpp


def _llama_cpp() -> Any:
    try:
        import gguf  # noqa: F401  the file is read back with it
        import llama_cpp
    except ImportError:
        raise UserError(MISSING) from None
    if not _SILENCE:  # llama.cpp logs every tensor it quantizes
        _SILENCE.append(llama_cpp.llama_log_callback(lambda level, text, data: None))
        llama_cpp.llama_log_set(_SILENCE[0], ctypes.c_void_p())
    return llama_cpp


def _version() -> str:
    try:
        return f"llama-cpp-python {version('llama-cpp-python')}"
    except PackageNotFoundError:
        raise UserError(MISSING) from None
