"""Built-in models, generated with torch and exported to ONNX once, then cached by a content key.

The cache key covers the model's spec and the versions of the packages that generate it, so the
ONNX file is rebuilt exactly when its inputs change. Reading the cache imports neither torch nor
transformers: a warm `hwsim compile` must take seconds.
"""

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

from hwsim.artifacts import atomic_dir
from hwsim.errors import HwsimError


@dataclass(frozen=True)
class LlamaSpec:
    """A small Llama-style decoder with an unmerged fp16 LoRA branch on chosen projections."""

    vocab_size: int = 512
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    max_position_embeddings: int = 256
    lora_r: int = 16
    lora_alpha: int = 32
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj")
    lora_dtype: str = "float16"
    seed: int = 0


@dataclass(frozen=True)
class ZooModel:
    name: str
    description: str
    spec: LlamaSpec
    build: Callable[[LlamaSpec, Path], None]
    default_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def _build_tiny_llama(spec: LlamaSpec, path: Path) -> None:
    from models.export import export_llama_lora

    export_llama_lora(spec, path)


ZOO: dict[str, ZooModel] = {
    "tiny-llama": ZooModel(
        name="tiny-llama",
        description="Llama-style decoder: 2 layers, hidden 256, 4 heads, vocab 512, seeded weights; "
                    "unmerged fp16 LoRA r=16 on q_proj and v_proj",
        spec=LlamaSpec(),
        build=_build_tiny_llama,
        default_shapes={"input_ids": (1, 16)},
    ),
}
DEFAULT_MODEL = "tiny-llama"


def cache_root() -> Path:
    return Path(os.environ.get("HWSIM_CACHE_DIR") or Path.home() / ".cache" / "hwsim")


def _versions() -> dict[str, str]:
    return {p: metadata.version(p) for p in ("torch", "transformers", "peft", "onnx", "onnxscript")}


def zoo_key(model: ZooModel) -> str:
    blob = json.dumps({"name": model.name, "spec": asdict(model.spec), "versions": _versions(),
                       "exporter": _exporter_source_hash()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _exporter_source_hash() -> str:
    here = Path(__file__).parent
    return hashlib.sha256(b"".join((here / f).read_bytes() for f in ("zoo.py", "export.py"))).hexdigest()


def zoo_onnx(name: str, on_build: Callable[[str], None] | None = None) -> Path:
    """Path of the built-in model's ONNX file, exporting it first if it is not cached yet."""
    if name not in ZOO:
        raise HwsimError(f"unknown model '{name}': not an .onnx file, and not a built-in model "
                         f"(built-in: {', '.join(sorted(ZOO))})")
    model = ZOO[name]
    final = cache_root() / "zoo" / f"{name}-{zoo_key(model)}"
    onnx_path = final / "model.onnx"
    if onnx_path.is_file():
        return onnx_path
    if on_build:
        on_build(f"exporting built-in model {name} to ONNX (first run only)")
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(final, force=True) as tmp:
        model.build(model.spec, tmp / "model.onnx")
        (tmp / "spec.json").write_text(json.dumps({"name": name, "spec": asdict(model.spec),
                                                   "versions": _versions()}, indent=2, sort_keys=True))
    return onnx_path
