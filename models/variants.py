"""A model with formats applied: base linears in a base format, the LoRA adapter in an adapter format,
as torch modules (the reference) and as compact ONNX (signs/trits packed, ai.hwsim ops + functions).
"""

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hwsim.errors import HwsimError, VerificationError
from models.export import quiet
from models.formats import BASE_FORMATS, Dbf, Mdbf, Ternary, TritPlane, WeightFormat
from models.formats.adapter import ADAPTER_FORMATS
from models.peft_io import LoraAdapter, convert_adapter, read_adapter
from models.torch_formats import AdaptedLinear, FormatLinear, Fp32LoraBranch, HalfLinear, branch_module
from models.zoo import ZOO, zoo_dir

_SKIP_BASE = ("lm_head", "embed", "pooler", "classifier")


@dataclass
class Base:
    """A loaded base model and how to call and export it."""

    name: str
    kind: str  # "causal-lm" or "embedding"
    model: torch.nn.Module  # the Hugging Face model (modules get replaced in place)
    adapter_dir: Path | None  # the zoo's trained adapter, if any

    def wrapper(self) -> torch.nn.Module:
        from models.zoo_build import LogitsOnly, MeanPooledEmbedding

        return (LogitsOnly if self.kind == "causal-lm" else MeanPooledEmbedding)(self.model).eval()

    def inputs(self, seed: int, batch: int = 4, seq: int = 16) -> tuple[torch.Tensor, ...]:
        """Held-in inputs: data from the task the zoo adapter was trained on; for other models, token ids
        from the same seeded generator over the model's vocabulary (and a full attention mask)."""
        if self.name != "minilm":
            from models.train import permutation_lm_batches

            ids = next(permutation_lm_batches(self.model.config.vocab_size, seq, batch, seed))["input_ids"]
            return (ids,) if self.kind == "causal-lm" else (ids, torch.ones_like(ids))
        from models.train import sentiment_sentences
        from models.zoo_build import minilm_tokenizer

        texts, _ = sentiment_sentences(batch, seed)
        enc = minilm_tokenizer()(texts, padding="max_length", max_length=seq, truncation=True, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    def io_names(self) -> tuple[list[str], list[str]]:
        if self.kind == "causal-lm":
            return ["input_ids"], ["logits"]
        return ["input_ids", "attention_mask"], ["sentence_embedding"]


def load_base(model: str) -> Base:
    """A built-in model name, or a local Hugging Face model directory (config.json + safetensors)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    if model in ZOO:
        d = zoo_dir(model)
        path, adapter = d / "base", d / "adapter"
    else:
        path, adapter = Path(model), None
        if not (path / "config.json").is_file():
            raise HwsimError(f"{path}: not a built-in model name nor a Hugging Face model directory "
                             f"(no config.json); built-in: {', '.join(sorted(ZOO))}")
    with quiet():
        config = AutoConfig.from_pretrained(path)
        causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
        if causal:
            hf = AutoModelForCausalLM.from_pretrained(path)
        else:  # encoders: the hidden states (BERT's pooler is not part of sentence embeddings)
            extra = {"add_pooling_layer": False} if config.model_type == "bert" else {}
            hf = AutoModel.from_pretrained(path, **extra)
        hf = hf.eval()
    return Base(model, "causal-lm" if causal else "embedding", hf, adapter)


def _module_path(peft_name: str) -> str:
    return peft_name.removeprefix("base_model.model.")


def fit_base(w: np.ndarray, fmt: str, **opts: Any) -> WeightFormat:
    fits = {"dbf": Dbf.fit, "mdbf": Mdbf.fit, "ternary": Ternary.fit, "tritplane": TritPlane.fit}
    return fits[fmt](w, **opts)


@dataclass
class VariantReport:
    adapter_format: str | None
    base_format: str
    adapter_bits: int = 0
    lora_fp16_bits: int = 0
    base_bits: int = 0
    base_fp16_bits: int = 0
    adapter_rel_error: float = 0.0  # mean over modules of ||dW - dW_hat|| / ||dW||
    base_rel_error: float = 0.0
    modules: list[dict[str, Any]] = field(default_factory=list)


def apply_formats(base: Base, adapter: LoraAdapter | None, adapter_format: str | None, base_format: str,
                  base_opts: dict[str, Any] | None = None, adapter_opts: dict[str, Any] | None = None) -> VariantReport:
    """Replace base linears and attach the adapter branch in place; returns bytes and errors.

    `base_opts` (bpw, iters) apply to the binary factorisations dbf and mdbf.
    adapter_format "reference" attaches the trained adapter itself in fp32: the unquantised model that
    output errors are measured against.
    """
    if base_format not in BASE_FORMATS:
        raise HwsimError(f"unknown base format '{base_format}' (known: {', '.join(BASE_FORMATS)})")
    if adapter_format not in (None, "reference", *ADAPTER_FORMATS):
        raise HwsimError(f"unknown adapter format '{adapter_format}' (known: {', '.join(ADAPTER_FORMATS)})")
    report = VariantReport(adapter_format, base_format)
    model = base.model
    if adapter is not None:
        missing = [m for m in adapter.modules if not _has_linear(model, _module_path(m))]
        if missing:
            raise HwsimError(f"the adapter targets module '{_module_path(missing[0])}', which {base.name} does not "
                             f"have as a linear layer (target_modules: {adapter.config.get('target_modules')})")
    base_errors = []
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and not any(s in n for s in _SKIP_BASE)]
    for name, lin in linears:
        w = lin.weight.detach().numpy()
        report.base_fp16_bits += 16 * w.size
        if base_format == "fp32":
            report.base_bits += 32 * w.size
            continue
        if base_format == "fp16":
            new: torch.nn.Module = HalfLinear(lin)
            report.base_bits += 16 * w.size
        else:
            f = fit_base(w, base_format, **(base_opts or {} if base_format in ("dbf", "mdbf") else {}))
            new = FormatLinear(f, lin.bias)
            report.base_bits += f.bits()
            base_errors.append(f.report.rel_error)
        model.set_submodule(name, new)
    report.base_rel_error = float(np.mean(base_errors)) if base_errors else 0.0
    if adapter is not None and adapter_format == "reference":
        for module, (a, b) in adapter.modules.items():
            path = _module_path(module)
            branch = Fp32LoraBranch(a, b, adapter.scaling(module))
            model.set_submodule(path, AdaptedLinear(model.get_submodule(path), branch))
    elif adapter is not None and adapter_format is not None:
        results = convert_adapter(adapter, adapter_format, **(adapter_opts or {}))
        for res in results:
            path = _module_path(res.name)
            model.set_submodule(path, AdaptedLinear(model.get_submodule(path), branch_module(res.fitted)))
            report.adapter_bits += res.fitted.bits()
            report.lora_fp16_bits += res.lora_fp16_bits
            report.modules.append(res.row())
        report.adapter_rel_error = float(np.mean([r.fitted.report.rel_error for r in results]))
    return report


def _has_linear(model: torch.nn.Module, path: str) -> bool:
    try:
        return isinstance(model.get_submodule(path), torch.nn.Linear)
    except AttributeError:
        return False


class ExportCheckError(VerificationError):
    """The exported ONNX file and the torch model it came from disagree beyond the derived tolerance."""


def export_variant(base: Base, path: Path, *, force: bool = False, seed: int = 0,
                   rtol: float = 1e-3) -> dict[str, Any]:
    """Export the (already formatted) model to one ONNX file; check torch against onnxruntime on it."""
    import onnx

    from hwsim.precision import reference
    from models.onnx_functions import attach_functions
    from models.torch_formats import TRANSLATIONS

    path = Path(path)
    if path.exists() and not force:
        raise HwsimError(f"{path} already exists: pass --force to replace it")
    wrapper = base.wrapper()
    args = base.inputs(seed)
    names, outs = base.io_names()
    dims = {n: {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("seq", min=2, max=256)}
            for n in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        with quiet(), torch.no_grad():
            ref = wrapper(*args).numpy()
            torch.onnx.export(wrapper, args, tmp, dynamo=True, external_data=False, input_names=names,
                              output_names=outs, dynamic_shapes=dims, custom_translation_table=TRANSLATIONS)
        model = attach_functions(onnx.load(tmp))
        onnx.save(model, tmp)
        # torch against the same reference and tolerance rule as every build (hwsim/precision.py)
        oracle = reference(model, {n: a.numpy() for n, a in zip(names, args, strict=True)}, rtol)
        check = oracle.check(0, ref)
        if not check.ok:
            raise ExportCheckError(f"exported {path.name}: torch differs from onnxruntime by {check.max_rel_err:.2e} "
                                   f"(relative), over its tolerance {oracle.tolerance(0):.2e} (rtol {rtol:g} + 2 x "
                                   f"fp16 rounding {oracle.fp16_rounding[0]:.2e})")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dense = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
    return {"path": str(path), "bytes": path.stat().st_size, "onnxruntime_vs_torch_rel_err": check.max_rel_err,
            "check": {**oracle.record(), **oracle.row(0)},
            "hwsim_ops": sorted({n.op_type for n in model.graph.node if n.domain == "ai.hwsim"}),
            "dense_fp32_matrices": len(dense)}


def variant_summary(report: VariantReport) -> dict[str, Any]:
    d = {k: v for k, v in report.__dict__.items() if k != "modules"}
    d["adapter_ratio_vs_lora_fp16"] = report.lora_fp16_bits / report.adapter_bits if report.adapter_bits else None
    d["base_ratio_vs_fp16"] = report.base_fp16_bits / report.base_bits if report.base_bits else None
    return json.loads(json.dumps(d))


def load_adapter_for(base: Base, adapter_dir: str | None) -> LoraAdapter | None:
    path = Path(adapter_dir) if adapter_dir else base.adapter_dir
    return read_adapter(path) if path is not None else None


def evaluate_variants(model: str, adapter_dir: str | None, variants: list[tuple[str, str]], *, seed: int = 0,
                      base_opts: dict[str, Any] | None = None,
                      progress: Any = None) -> list[dict[str, Any]]:
    """Bytes, reconstruction and output errors of each (adapter format, base format) on held-in inputs,
    against the unquantised model (fp32 base + the trained fp32 adapter, unmerged)."""
    def run(adapter_format: str, base_format: str) -> tuple[np.ndarray, VariantReport]:
        base = load_base(model)
        adapter = load_adapter_for(base, adapter_dir)
        report = apply_formats(base, adapter, adapter_format, base_format, base_opts=base_opts)
        with torch.no_grad():
            return base.wrapper()(*base.inputs(seed)).numpy(), report

    ref, _ = run("reference", "fp32")
    rows = []
    for adapter_format, base_format in variants:
        if progress:
            progress(f"{adapter_format} adapter, {base_format} base")
        out, rep = run(adapter_format, base_format)
        row = variant_summary(rep)
        row["output_rel_error"] = float(np.linalg.norm(out - ref) / np.linalg.norm(ref))
        if out.ndim == 2:  # sentence embeddings: cosine similarity to the unquantised model's
            cos = (out * ref).sum(-1) / (np.linalg.norm(out, axis=-1) * np.linalg.norm(ref, axis=-1))
            row["cosine_similarity"] = float(cos.mean())
        rows.append(row)
    return rows
