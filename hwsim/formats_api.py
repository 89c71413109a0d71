"""The typed API for adapter formats outside a build: convert a PEFT adapter, export a model with formats
applied, compare formats' bytes and errors (each imports torch; hwsim.api is the compile path)."""

import json
from pathlib import Path
from typing import Any

from hwsim.api import Progress
from hwsim.errors import HwsimError
from models.zoo import ZOO, zoo_dir


def resolve_adapter_dir(adapter: str, progress: Progress | None = None) -> Path:
    """A PEFT adapter directory, or a built-in model name (its trained adapter)."""
    path = Path(adapter)
    if path.exists() or adapter not in ZOO:
        return path
    return zoo_dir(adapter, progress) / "adapter"


def convert_adapter_dir(adapter: str, fmt: str, out: Path, *, force: bool = False, peft_twin: bool = False,
                        progress: Progress | None = None, **opts: Any) -> dict[str, Any]:
    """Convert every module of a PEFT LoRA adapter to `fmt`; write the compact adapter to `out`.

    With `peft_twin` the dense fp32 PEFT LoRA computing the same dW is written beside it (opt-in: it is
    larger than the fp16 source). The result is hwsim_adapter.json: file bytes written vs the source's.
    """
    from models.peft_io import WEIGHTS, convert_adapter, read_adapter, save_converted

    if Path(out).exists() and not force:
        raise HwsimError(f"{out} already exists: pass --force to replace it, or choose another --out")
    src = resolve_adapter_dir(adapter, progress)
    lora = read_adapter(src)
    if progress:
        progress(f"fitting {len(lora.modules)} modules as {fmt}")
    try:
        results = convert_adapter(lora, fmt, **opts)
    except ValueError as e:  # a bad format option (layout, packing)
        raise HwsimError(str(e)) from None
    save_converted(Path(out), lora, fmt, results, force=force, peft_twin=peft_twin,
                   source_bytes=(src / WEIGHTS).stat().st_size)
    return json.loads((Path(out) / "hwsim_adapter.json").read_text())


def _base_opts(bpw: float | None) -> dict[str, Any]:
    return {} if bpw is None else {"bpw": bpw}


def export_model(model: str, *, adapter: Path | None = None, adapter_format: str = "lora-fp16",
                 base_format: str = "fp32", bpw: float | None = None, out: Path, force: bool = False,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Apply formats to MODEL (+ adapter) and export it to one compact ONNX file, checked in onnxruntime."""
    from models.variants import apply_formats, export_variant, load_adapter_for, load_base, variant_summary

    if Path(out).exists() and not force:
        raise HwsimError(f"{out} already exists: pass --force to replace it")
    step = progress or (lambda _m: None)
    step(f"loading {model}")
    base = load_base(model)
    lora = load_adapter_for(base, str(adapter) if adapter else None)
    step(f"fitting {adapter_format} adapter, {base_format} base")
    report = apply_formats(base, lora, adapter_format if lora else None, base_format, base_opts=_base_opts(bpw))
    step("exporting to ONNX and checking it in onnxruntime")
    return {"variant": variant_summary(report), "export": export_variant(base, Path(out), force=force),
            "modules": report.modules}


def compare_formats(model: str, *, adapter: Path | None = None, variants: list[tuple[str, str]],
                    bpw: float | None = None, progress: Progress | None = None) -> list[dict[str, Any]]:
    """Bytes and errors of each (adapter format, base format) pair on MODEL's held-in inputs."""
    from models.variants import evaluate_variants

    return evaluate_variants(model, str(adapter) if adapter else None, variants, base_opts=_base_opts(bpw),
                             progress=progress)
