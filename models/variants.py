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
from models.formats import BASE_FORMATS, Dbf, Mdbf, Ternary, TritPlane, WeightFormat, rel_error
from models.formats.adapter import ADAPTER_FORMATS
from models.formats.q8_0 import Q80
from models.peft_io import LoraAdapter, convert_adapter, read_adapter
from models.torch_formats import (
    AdaptedLinear,
    FormatLinear,
    Fp32LoraBranch,
    HalfEmbedding,
    HalfLinear,
    Q8Embedding,
    Q8Linear,
    branch_module,
)
from models.zoo import ZOO, zoo_dir

_SKIP_BASE = ("lm_head", "embed", "pooler", "classifier")
HEAD_FORMATS = ("fp16", "q8_0")  # the LM head (and the embedding tied to it) under a base format below fp32
_DECODERS = ("llama", "mistral", "qwen2")


@dataclass
class Base:
    """A loaded base model and how to call and export it, per phase.

    kind: "causal-lm" (token ids -> logits), "embedding" (an encoder: ids + mask -> a pooled embedding; it has
    no decode phase) or "block" (hidden states -> hidden states through decoder blocks alone). Decode is one
    step with a KV cache of `context` past tokens (models.zoo_build.CachedStep).
    """

    name: str
    kind: str
    model: torch.nn.Module  # the Hugging Face model (modules get replaced in place)
    adapter_dir: Path | None  # the zoo's trained adapter, if any
    path: Path | None = None  # the model directory (a tokenizer saved there gives text inputs)

    @property
    def phases(self) -> tuple[str, ...]:
        return ("prefill",) if self.kind == "embedding" else ("prefill", "decode")

    def wrapper(self, phase: str = "prefill") -> torch.nn.Module:
        from models.zoo_build import BlockOnly, CachedStep, LogitsOnly, MeanPooledEmbedding

        if phase == "decode":
            return CachedStep(self.model, embeds=self.kind == "block").eval()
        return {"causal-lm": LogitsOnly, "embedding": MeanPooledEmbedding, "block": BlockOnly}[self.kind](
            self.model).eval()

    def kv_shape(self, context: int, batch: int = 1) -> tuple[int, ...]:
        """[layers, batch, kv_heads, context, head_dim] of the stacked past keys (and values)."""
        c = self.model.config
        heads = c.num_attention_heads
        head_dim = getattr(c, "head_dim", None) or c.hidden_size // heads
        return (c.num_hidden_layers, batch, getattr(c, "num_key_value_heads", None) or heads, context, head_dim)

    def inputs(self, seed: int, batch: int = 4, seq: int = 16, phase: str = "prefill",
               context: int = 0) -> tuple[torch.Tensor, ...]:
        """Held-in inputs: with a tokenizer beside the model, sentences of the sentiment task the zoo adapters
        are trained on; else token ids from a seeded generator over the model's vocabulary (and a full attention
        mask). A block takes seeded hidden states. Decode: the last token of one such sequence, and seeded past
        keys and values."""
        if phase == "decode":
            first = self.inputs(seed, batch=1, seq=seq)[0][:, -1:]
            gen = torch.Generator().manual_seed(seed)
            shape = self.kv_shape(context)
            return first, torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
        if self.kind == "block":
            gen = torch.Generator().manual_seed(seed)
            return (torch.randn((batch, seq, self.model.config.hidden_size), generator=gen),)
        if self.path is None or not (self.path / "tokenizer_config.json").is_file():
            from models.train import permutation_lm_batches

            ids = next(permutation_lm_batches(self.model.config.vocab_size, seq, batch, seed))["input_ids"]
            return (ids,) if self.kind == "causal-lm" else (ids, torch.ones_like(ids))
        from transformers import AutoTokenizer

        from models.train import sentiment_sentences

        texts, _ = sentiment_sentences(batch, seed)
        with quiet():
            tok = AutoTokenizer.from_pretrained(self.path)
        enc = tok(texts, padding="max_length", max_length=seq, truncation=True, return_tensors="pt")
        return (enc["input_ids"],) if self.kind == "causal-lm" else (enc["input_ids"], enc["attention_mask"])

    def io_names(self, phase: str = "prefill") -> tuple[list[str], list[str]]:
        first, out = {"causal-lm": ("input_ids", "logits"), "block": ("hidden_states", "output"),
                      "embedding": ("input_ids", "sentence_embedding")}[self.kind]
        if phase == "decode":
            return [first, "past_keys", "past_values"], [out, "present_keys", "present_values"]
        if self.kind == "embedding":
            return ["input_ids", "attention_mask"], [out]
        return [first], [out]


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
    # a bare decoder stack (e.g. LlamaModel: the llama2-7b-block zoo entry) takes hidden states
    kind = "causal-lm" if causal else "block" if config.model_type in _DECODERS else "embedding"
    return Base(model, kind, hf, adapter, path)


def module_path(peft_name: str) -> str:
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
    head_format: str | None = None  # the LM head's format: None where the model keeps its own (an fp32 base)
    head_rel_error: float = 0.0  # ||W - W_hat|| / ||W|| of the LM head in its stored format
    modules: list[dict[str, Any]] = field(default_factory=list)
    fitted: list[Any] = field(default_factory=list)  # the adapter's ModuleResults (not in the summary)
    training: dict[str, Any] | None = None  # sign-form training, when it ran (models/sign_distill.py)


def apply_formats(base: Base, adapter: LoraAdapter | None, adapter_format: str | None, base_format: str,
                  base_opts: dict[str, Any] | None = None, adapter_opts: dict[str, Any] | None = None,
                  head_format: str = "fp16") -> VariantReport:
    """Replace base linears and attach the adapter branch in place; returns bytes and errors.

    `head_format` stores the LM head (and the input embedding where it is tied) in fp16 or Q8_0 under every
    base format below fp32 (`_low_bit_output_layer`).

    `base_opts` (bpw, iters, importance) apply to the binary factorisations dbf and mdbf; importance
    "calibration" weights each layer's input channels by their RMS on the model's held-in task inputs.
    adapter_format "reference" attaches the trained adapter itself in fp32: the unquantised model that
    output errors are measured against.
    """
    if base_format not in BASE_FORMATS:
        raise HwsimError(f"unknown base format '{base_format}' (known: {', '.join(BASE_FORMATS)})")
    if adapter_format not in (None, "reference", *ADAPTER_FORMATS):
        raise HwsimError(f"unknown adapter format '{adapter_format}' (known: {', '.join(ADAPTER_FORMATS)})")
    if head_format not in HEAD_FORMATS:
        raise HwsimError(f"unknown head format '{head_format}' (known: {', '.join(HEAD_FORMATS)})")
    if head_format != "fp16" and base_format == "fp32":
        raise HwsimError(f"head format {head_format} needs a base format below fp32 (the fp32 base keeps its head)")
    report = VariantReport(adapter_format, base_format)
    model = base.model
    if adapter is not None:
        missing = [m for m in adapter.modules if not _has_linear(model, module_path(m))]
        if missing:
            raise HwsimError(f"the adapter targets module '{module_path(missing[0])}', which {base.name} does not "
                             f"have as a linear layer (target_modules: {adapter.config.get('target_modules')})")
    base_errors = []
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
               and not any(s in n for s in _SKIP_BASE)]
    opts = dict(base_opts or {}) if base_format in ("dbf", "mdbf") else {}
    rms = _input_rms(base, [n for n, _ in linears]) if opts.pop("importance", "none") == "calibration" else {}
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
            f = fit_base(w, base_format, **opts, **({"importance": rms[name]} if name in rms else {}))
            new = FormatLinear(f, lin.bias)
            report.base_bits += f.bits()
            base_errors.append(f.report.rel_error)
        model.set_submodule(name, new)
    if base_format != "fp32":
        report.head_rel_error = _low_bit_output_layer(model, head_format)
        report.head_format = head_format
    report.base_rel_error = float(np.mean(base_errors)) if base_errors else 0.0
    if adapter is not None and adapter_format == "reference":
        for module, (a, b) in adapter.modules.items():
            path = module_path(module)
            branch = Fp32LoraBranch(a, b, adapter.scaling(module))
            model.set_submodule(path, AdaptedLinear(model.get_submodule(path), branch))
    elif adapter is not None and adapter_format is not None:
        results = convert_adapter(adapter, adapter_format, **(adapter_opts or {}))
        for res in results:
            path = module_path(res.name)
            model.set_submodule(path, AdaptedLinear(model.get_submodule(path), branch_module(res.fitted)))
            report.adapter_bits += res.fitted.bits()
            report.lora_fp16_bits += res.lora_fp16_bits
            report.modules.append(res.row())
        report.adapter_rel_error = float(np.mean([r.fitted.report.rel_error for r in results]))
        report.fitted = results
    return report


def _frozen(a: np.ndarray) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.from_numpy(a), requires_grad=False)


def _low_bit_output_layer(model: torch.nn.Module, head_format: str) -> float:
    """The LM head and the input embedding (one table where they are tied) in fp16 or Q8_0 under every base
    format below fp32; returns the head's relative weight error.

    The output layer is the largest single matrix of a small LLM (SmolLM2-135M: 28M of 135M parameters) and
    is read whole for every token; low-bit schemes keep it at 8-16 bits (BitNet b1.58 does not ternarise it,
    llama.cpp's TQ2_0 GGUF of SmolLM2 stores it Q8_0, its F16 one F16). Left fp32 it was 113 MB a token, a third
    of an fp16 base's decode reads and four fifths of a ternary one's; Q8_0 halves fp16's 56 MB and runs as
    int8 dot products."""
    head = getattr(model, "lm_head", None)
    if not isinstance(head, torch.nn.Linear):
        return 0.0
    emb = model.get_input_embeddings()
    tied = isinstance(emb, torch.nn.Embedding) and emb.weight is head.weight
    w = head.weight.detach().float().numpy()
    if head_format == "q8_0":
        if head.bias is not None or w.shape[1] % 32:
            raise HwsimError(f"head format q8_0 needs a bias-free LM head with rows in blocks of 32; this one is "
                             f"{list(w.shape)}{' with a bias' if head.bias is not None else ''}")
        f = Q80.fit(w)
        q, d = _frozen(f.q), _frozen(f.d)
        model.set_submodule("lm_head", Q8Linear(q, d))
        if tied:
            model.set_input_embeddings(Q8Embedding(q, d))
        elif isinstance(emb, torch.nn.Embedding):
            e = Q80.fit(emb.weight.detach().float().numpy())
            model.set_input_embeddings(Q8Embedding(_frozen(e.q), _frozen(e.d)))
        return rel_error(w, f.reconstruct())
    half = HalfLinear(head)
    model.set_submodule("lm_head", half)
    if tied:
        model.set_input_embeddings(HalfEmbedding(half.weight))
    elif isinstance(emb, torch.nn.Embedding):
        model.set_input_embeddings(HalfEmbedding(torch.nn.Parameter(emb.weight.detach().half(), requires_grad=False)))
    return rel_error(w, half.weight.detach().float().numpy())


def train_adapter(base: Base, adapter: LoraAdapter, report: VariantReport, *, steps: int, seed: int = 0,
                  seq: int = 16, progress: Any = None) -> None:
    """Sign-form training of the converted adapter `apply_formats` attached (models/sign_distill.py); the
    model's branches become the trained, packed ones and `report` says so."""
    from models.formats.adapter import TRAINABLE
    from models.sign_distill import distill

    if report.adapter_format not in TRAINABLE:
        raise HwsimError(f"--train applies to {', '.join(TRAINABLE)} adapters, not {report.adapter_format}")
    trained, info = distill(base, adapter, report.fitted, steps=steps, seed=seed, seq=seq, progress=progress)
    info["conversion_adapter_rel_error"] = report.adapter_rel_error
    report.fitted, report.training = trained, info
    report.modules = [r.row() for r in trained]
    report.adapter_bits = sum(r.fitted.bits() for r in trained)
    report.adapter_rel_error = float(np.mean([r.fitted.report.rel_error for r in trained]))


def _input_rms(base: Base, names: list[str]) -> dict[str, np.ndarray]:
    """Each named linear's input-channel RMS over calibration batches (models/tasks.py), by forward hooks."""
    from models.tasks import train_batches

    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook(name: str):
        def record(_m: torch.nn.Module, args: tuple, _out: Any) -> None:
            x = args[0].detach().reshape(-1, args[0].shape[-1]).double()
            sums[name] = sums.get(name, 0) + (x * x).sum(0)
            counts[name] = counts.get(name, 0) + x.shape[0]
        return record

    handles = [base.model.get_submodule(n).register_forward_hook(hook(n)) for n in names]
    try:
        with torch.no_grad():
            for batch in train_batches(base, 4, 8, 16):
                base.wrapper()(*batch)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.sqrt(sums[n] / counts[n]).numpy() for n in sums}


def _has_linear(model: torch.nn.Module, path: str) -> bool:
    try:
        return isinstance(model.get_submodule(path), torch.nn.Linear)
    except AttributeError:
        return False


class ExportCheckError(VerificationError):
    """The exported ONNX file and the torch model it came from disagree beyond the derived tolerance."""


def export_variant(base: Base, path: Path, *, force: bool = False, seed: int = 0, rtol: float = 1e-3,
                   phase: str = "prefill", context: int = 128) -> dict[str, Any]:
    """Export the (already formatted) model to one ONNX file; check torch against onnxruntime on it.

    prefill: batch and sequence dims dynamic. decode: one token with a KV cache of `context` past tokens, all
    dims static (the context is part of the variant's key)."""
    import onnx

    from hwsim.precision import reference
    from models.onnx_functions import attach_functions
    from models.torch_formats import TRANSLATIONS

    path = Path(path)
    if path.exists() and not force:
        raise HwsimError(f"{path} already exists: pass --force to replace it")
    wrapper = base.wrapper(phase)
    args = base.inputs(seed, phase=phase, context=context)
    names, outs = base.io_names(phase)
    dims = None if phase == "decode" else {
        n: {0: torch.export.Dim("batch", min=1, max=64), 1: torch.export.Dim("seq", min=2, max=256)} for n in names}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".onnx", dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        with quiet(), torch.no_grad():
            got = wrapper(*args)
            got = [t.numpy() for t in (got if isinstance(got, tuple) else (got,))]
            torch.onnx.export(wrapper, args, tmp, dynamo=True, external_data=False, input_names=names,
                              output_names=outs, dynamic_shapes=dims, custom_translation_table=TRANSLATIONS)
        model = attach_functions(onnx.load(tmp))
        onnx.save(model, tmp)
        # torch against the same reference and tolerance rule as every build (hwsim/precision.py)
        oracle = reference(model, {n: a.numpy() for n, a in zip(names, args, strict=True)}, rtol)
        checks = [oracle.check(i, g) for i, g in enumerate(got)]
        worst = max(range(len(checks)), key=lambda i: checks[i].max_rel_err / oracle.tolerance(i))
        check = checks[worst]
        if not all(c.ok for c in checks):
            raise ExportCheckError(f"exported {path.name}: torch differs from onnxruntime on '{outs[worst]}' by "
                                   f"{check.max_rel_err:.2e} (relative), over its tolerance "
                                   f"{oracle.tolerance(worst):.2e} (rtol {rtol:g} + 2 x fp16 rounding "
                                   f"{oracle.fp16_rounding[worst]:.2e})")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dense = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2]
    return {"path": str(path), "bytes": path.stat().st_size, "onnxruntime_vs_torch_rel_err": check.max_rel_err,
            "check": {**oracle.record(), **oracle.row(worst)}, "phase": phase,
            "inputs": {n: list(a.shape) for n, a in zip(names, args, strict=True)},
            "hwsim_ops": sorted({n.op_type for n in model.graph.node if n.domain == "ai.hwsim"}),
            "dense_fp32_matrices": len(dense)}


def variant_summary(report: VariantReport) -> dict[str, Any]:
    d = {k: v for k, v in report.__dict__.items() if k not in ("modules", "fitted", "training")}
    d["adapter_ratio_vs_lora_fp16"] = report.lora_fp16_bits / report.adapter_bits if report.adapter_bits else None
    d["base_ratio_vs_fp16"] = report.base_fp16_bits / report.base_bits if report.base_bits else None
    return json.loads(json.dumps(d))


def load_adapter_for(base: Base, adapter_dir: str | None) -> LoraAdapter | None:
    path = Path(adapter_dir) if adapter_dir else base.adapter_dir
    return read_adapter(path) if path is not None else None


def evaluate_variants(model: str, adapter_dir: str | None, variants: list[tuple[str, str]], *, seed: int = 0,
                      base_opts: dict[str, Any] | None = None, head_format: str = "fp16",
                      progress: Any = None) -> list[dict[str, Any]]:
    """Bytes, reconstruction and output errors of each (adapter format, base format) on held-in inputs,
    against the unquantised model (fp32 base + the trained fp32 adapter, unmerged); bases below fp32 store the
    LM head in `head_format`."""
    def run(adapter_format: str, base_format: str) -> tuple[np.ndarray, VariantReport]:
        base = load_base(model)
        adapter = load_adapter_for(base, adapter_dir)
        report = apply_formats(base, adapter, adapter_format, base_format, base_opts=base_opts,
                               head_format=head_format if base_format != "fp32" else "fp16")
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
