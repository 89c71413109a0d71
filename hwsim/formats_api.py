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
                        train_steps: int = 0, model: str | None = None, base_format: str = "fp32",
                        progress: Progress | None = None, **opts: Any) -> dict[str, Any]:
    """Convert every module of a PEFT LoRA adapter to `fmt`; write the compact adapter to `out`.

    With `peft_twin` the dense fp32 PEFT LoRA computing the same dW is written beside it (opt-in: it is
    larger than the fp16 source). With `train_steps` the conversion is then trained in sign form inside
    `model` (a built-in name or a Hugging Face directory; default: the built-in model the adapter belongs to)
    on its `base_format` base, distilled from the fp adapter's outputs (models/sign_distill.py). The result
    is hwsim_adapter.json: file bytes written vs the source's (and the training, when it ran).
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
    training = None
    if train_steps:
        results, training = _train(adapter, lora, fmt, results, train_steps, model, base_format, progress)
    save_converted(Path(out), lora, fmt, results, force=force, peft_twin=peft_twin,
                   source_bytes=(src / WEIGHTS).stat().st_size, training=training)
    return json.loads((Path(out) / "hwsim_adapter.json").read_text())


def _train(adapter: str, lora: Any, fmt: str, results: list[Any], steps: int, model: str | None, base_format: str,
           progress: Progress | None) -> tuple[list[Any], dict[str, Any]]:
    """Sign-form training of converted `results` inside the base model the adapter belongs to."""
    from models.formats.adapter import TRAINABLE
    from models.sign_distill import distill
    from models.torch_formats import AdaptedLinear, branch_module
    from models.variants import apply_formats, load_base, module_path

    if fmt not in TRAINABLE:
        raise HwsimError(f"--train applies to {', '.join(TRAINABLE)} adapters, not {fmt}")
    model = model or (adapter if adapter in ZOO else None)
    if model is None:
        raise HwsimError(f"{adapter}: --train needs the base model the adapter was trained on: pass --model "
                         "(a built-in name or a Hugging Face model directory)")
    if progress:
        progress(f"loading {model} ({base_format} base) for sign-form training")
    base = load_base(model)
    apply_formats(base, None, None, base_format)
    for r in results:
        path = module_path(r.name)
        base.model.set_submodule(path, AdaptedLinear(base.model.get_submodule(path), branch_module(r.fitted)))
    trained, info = distill(base, lora, results, steps=steps, progress=progress)
    return trained, {**info, "model": model, "base_format": base_format}


def _base_opts(bpw: float | None, iters: int | None = None, importance: str | None = None) -> dict[str, Any]:
    """dbf/mdbf fitting options given on the command line (the rest keep the formats' defaults)."""
    if iters is not None and iters < 0:
        raise HwsimError(f"--iters must be 0 or more, got {iters}")
    if importance not in (None, "none", "calibration"):
        raise HwsimError(f"--importance must be none or calibration, not '{importance}'")
    return {k: v for k, v in (("bpw", bpw), ("iters", iters), ("importance", importance)) if v is not None}


def export_model(model: str, *, adapter: Path | None = None, adapter_format: str = "lora-fp16",
                 base_format: str = "fp32", bpw: float | None = None, iters: int | None = None,
                 importance: str | None = None, out: Path, force: bool = False,
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
    report = apply_formats(base, lora, adapter_format if lora else None, base_format,
                           base_opts=_base_opts(bpw, iters, importance))
    step("exporting to ONNX and checking it in onnxruntime")
    return {"variant": variant_summary(report), "export": export_variant(base, Path(out), force=force),
            "modules": report.modules}


def compare_formats(model: str, *, adapter: Path | None = None, variants: list[tuple[str, str]],
                    bpw: float | None = None, iters: int | None = None, importance: str | None = None,
                    head_format: str = "fp16", progress: Progress | None = None) -> list[dict[str, Any]]:
    """Bytes and errors of each (adapter format, base format) pair on MODEL's held-in inputs; bases below fp32
    store the LM head in `head_format` (models.variants.HEAD_FORMATS)."""
    from models.variants import HEAD_FORMATS, evaluate_variants

    if head_format not in HEAD_FORMATS:
        raise HwsimError(f"unknown head format '{head_format}' (known: {', '.join(HEAD_FORMATS)})")
    return evaluate_variants(model, str(adapter) if adapter else None, variants,
                             base_opts=_base_opts(bpw, iters, importance), head_format=head_format, progress=progress)
