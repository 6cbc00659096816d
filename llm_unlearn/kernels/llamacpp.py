"""A GGUF cell evaluated with llama.cpp's own inference (`pip install llm-unlearn[llamacpp]`).

The `gguf-*` quantizers keep the file llama.cpp wrote in the cell (`quant/gguf.py`,
`audit/cache.py`); here llama-cpp-python's `Llama(model_path=that file, logits_all=True)` runs
it on CPU, behind the two calls the metrics make of a Hugging Face model (`metrics/generation.py`,
`metrics/tofu.py`), so the same metric code computes the same metrics from llama.cpp's numbers:

- `model(input_ids=[B, T], attention_mask=None | [B, T]).logits`: each row evaluated alone from
  position 0, its real tokens (mask 1; every token without a mask: right padding, which causal
  attention keeps from the real tokens) fed as token ids, so llama.cpp sees exactly the metric's
  tokens (our tokenizer's ids, which are the file's: the converter wrote that vocabulary);
  logits [B, T, V] float32, 0 at padded positions.
- `model.generate(input_ids, attention_mask, max_new_tokens, pad_token_id, ...)`: greedy decoding,
  x_{t+1} = argmax_v logits_t(v) (ties: the lowest id, as torch's argmax), each prompt's real
  tokens from position 0, stopping at the generation config's eos tokens or after
  `max_new_tokens`; rows are [prompt | new tokens | pad_token_id ...], as transformers returns them.

What differs from the simulation (dequantized weights in float32) is llama.cpp's arithmetic:
its CPU matmuls round each activation block to 8 bits (Q8_0 / Q8_K, the `vec_dot_type` of
the weight types) and its key/value cache holds float16.

llama.cpp's weight repacking is off (the "extra buffer types": AMX or AVX layouts of the weights
chosen by the CPU): on virtualised AMX machines (Sapphire Rapids) its AMX path segfaults in the
first forward pass (llama.cpp issue 20824), and without it the numbers do not depend on which
layout a CPU gets; the arithmetic is ggml's CPU dot products, as above.

Each call starts from an empty cache, so a row's numbers do not depend on the rows before it.
The context is sized to the longest sequence seen so far (at least `MIN_CONTEXT` tokens, at most
the model's), not to the model's whole context: with `logits_all` llama-cpp-python keeps a
[n_ctx, V] float32 buffer.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, GenerationConfig, PretrainedConfig
from transformers.modeling_outputs import CausalLMOutput

from llm_unlearn.context import context_length
from llm_unlearn.quant.gguf import GGUFQuantizer, llama_cpp_module

#: the smallest context a Llama is built with (llama-cpp-python's default n_ctx)
MIN_CONTEXT = 512


class LlamaCppModel(nn.Module):
    """The GGUF file at `path` run by llama.cpp, called as the metrics call a causal LM (module doc).

    `config` and `generation_config` are the source checkpoint's: its context length and eos tokens.
    """

    def __init__(self, path: Path, config: PretrainedConfig, generation_config: GenerationConfig) -> None:
        super().__init__()
        self._llama_cpp = llama_cpp_module()
        self.path = path
        self.config = config
        self.generation_config = generation_config
        # the metrics put their inputs on the device of the model's first parameter: llama.cpp
        # reads them from the CPU
        self.device_anchor = nn.Parameter(torch.empty(0), requires_grad=False)
        self._llama: Any = None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any
    ) -> CausalLMOutput:
        """Logits [B, T, V] of each row's real tokens, evaluated alone (module doc)."""
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        logits = torch.zeros((*input_ids.shape, self.config.vocab_size))
        for j in range(input_ids.shape[0]):
            real = mask[j].bool()
            tokens = input_ids[j][real].tolist()
            logits[j, real] = torch.from_numpy(self._evaluate(tokens, len(tokens)))
        return CausalLMOutput(logits=logits)

    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        max_new_tokens: int,
        pad_token_id: int,
        do_sample: bool = False,
        num_beams: int = 1,
        **_: Any,
    ) -> torch.Tensor:
        """Greedy continuations, [B, T + longest new], padded with `pad_token_id` (module doc)."""
        if do_sample or num_beams != 1:
            raise ValueError("llama.cpp's model here decodes greedily only (do_sample=False, num_beams=1)")
        eos = self.generation_config.eos_token_id
        stop = set(eos if isinstance(eos, list) else [] if eos is None else [eos])
        new_rows = []
        for row, mask in zip(input_ids, attention_mask, strict=True):
            tokens = row[mask.bool()].tolist()
            last = self._evaluate(tokens, len(tokens) + max_new_tokens)[-1]
            new: list[int] = []
            while True:
                new.append(int(np.argmax(last)))
                if new[-1] in stop or len(new) == max_new_tokens:
                    break
                last = self._continue(new[-1])
            new_rows.append(new)
        out = torch.full((input_ids.shape[0], max(map(len, new_rows))), pad_token_id, dtype=input_ids.dtype)
        for j, new in enumerate(new_rows):
            out[j, : len(new)] = torch.tensor(new)
        return torch.cat([input_ids, out], dim=1)

    def _evaluate(self, tokens: list[int], length: int) -> np.ndarray:
        """llama.cpp's logits [len(tokens), V] for `tokens` from an empty cache, in a context of
        at least `length` tokens (a generation's prompt and new tokens)."""
        llama = self._context(length)
        llama.reset()
        llama.eval(tokens)
        return llama.scores[: len(tokens)].copy()

    def _continue(self, token: int) -> np.ndarray:
        """The logits after one more token, appended to the sequence llama.cpp holds."""
        self._llama.eval([token])
        return self._llama.scores[self._llama.n_tokens - 1].copy()

    def _context(self, length: int) -> Any:
        """The Llama, rebuilt with a larger context when `length` tokens do not fit its own."""
        if self._llama is not None and self._llama.n_ctx() >= length:
            return self._llama
        limit = context_length(self)
        if limit is not None and length > limit:
            raise ValueError(f"{length} tokens exceed the model's context of {limit}")
        n_ctx = max(MIN_CONTEXT, 1 << (length - 1).bit_length())
        self.close()
        threads = torch.get_num_threads()
        with _without_weight_repacking(self._llama_cpp):
            self._llama = self._llama_cpp.Llama(
                model_path=str(self.path),
                n_ctx=n_ctx if limit is None else min(n_ctx, limit),
                logits_all=True,
                n_threads=threads,
                n_threads_batch=threads,
                verbose=False,
            )
        return self._llama

    def close(self) -> None:
        """Free llama.cpp's model and context now (at interpreter exit llama-cpp-python's own
        finaliser fails noisily)."""
        if self._llama is not None:
            self._llama.close()
            self._llama = None


@contextmanager
def _without_weight_repacking(llama_cpp: Any) -> Iterator[None]:
    """Build Llamas with llama.cpp's weight repacking off (`use_extra_bufts = false`), which
    llama-cpp-python's `Llama` does not take as an argument: its default model parameters say so
    while it is built (module doc)."""
    low = llama_cpp.llama_cpp
    default = low.llama_model_default_params

    def params() -> Any:
        chosen = default()
        chosen.use_extra_bufts = False
        return chosen

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = default


def llama_cpp_model(checkpoint: Path, quantizer: GGUFQuantizer, cell: Path) -> LlamaCppModel:
    """The `gguf-*` cell of `checkpoint` in `cell` run by llama.cpp: the GGUF file its quantizer
    kept there (the audit writes the cell first, `audit/run.py`)."""
    llama_cpp_module()  # the one line, not a traceback from inside llama.cpp
    path = quantizer.kept_file(cell)
    config = AutoConfig.from_pretrained(str(checkpoint))
    if (checkpoint / "generation_config.json").is_file():
        generation = GenerationConfig.from_pretrained(str(checkpoint))
    else:
        generation = GenerationConfig.from_model_config(config)
    return LlamaCppModel(path, config, generation)
