"""What a variant's formats cost in quality, measured in torch on held-in inputs against the unquantised model
(fp32 base + the trained adapter in fp32): output error, cosine (embeddings), task accuracy (models/tasks.py) and
perplexity (models/perplexity.py); and what one adapter-training step of the whole model holds in memory.
"""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class Reference:
    outputs: np.ndarray  # the unquantised model's prefill outputs on Base.inputs(seed)
    head: np.ndarray | None  # the task's head fitted on the unquantised model (models.tasks.task_head)


def reference(model: str, adapter: str | None, seed: int) -> Reference:
    from models.tasks import task_head
    from models.variants import apply_formats, load_adapter_for, load_base

    base = load_base(model)
    apply_formats(base, load_adapter_for(base, adapter), "reference", "fp32")
    wrapper = base.wrapper()
    with torch.no_grad():
        out = wrapper(*base.inputs(seed)).numpy()
    return Reference(out, task_head(base, wrapper))


def quality(base, ref: Reference, seed: int, corpus: np.ndarray | None) -> dict[str, Any]:
    """Output error (and cosine for embeddings), task accuracy and torch perplexity of `base` as it is now."""
    from models.perplexity import perplexity_torch
    from models.tasks import TaskAccuracy

    wrapper = base.wrapper()
    with torch.no_grad():
        got = wrapper(*base.inputs(seed)).numpy()
    out: dict[str, Any] = {"output_rel_error": float(np.linalg.norm(got - ref.outputs) / np.linalg.norm(ref.outputs))}
    if got.ndim == 2:  # sentence embeddings: cosine similarity to the unquantised model's
        cos = (got * ref.outputs).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref.outputs, axis=-1))
        out["cosine_similarity"] = float(cos.mean())
    acc = TaskAccuracy(base, ref.head)(wrapper)
    if acc is not None:
        out["task_accuracy"] = acc
    if corpus is not None:
        out["perplexity_torch"] = perplexity_torch(wrapper, corpus)
    return out


def training_step(base, lora, report, tokens: int, seed: int) -> dict[str, Any]:
    """One adapter-training step of the whole model, base frozen, measured (models.sign_training): the fp LoRA
    baseline trains fp32 factors (as PEFT keeps them), the other formats their sign-form latents and scales.
    Replaces the model's branches: call it last."""
    from models.sign_distill import trainable_branch
    from models.sign_training import LoraBranch, whole_step_state
    from models.variants import module_path

    model = base.model
    for p in model.parameters():
        p.requires_grad_(False)
    for r in report.fitted:
        a, b = lora.modules[r.name]
        branch = LoraBranch(a, b, lora.scaling(r.name)) if report.adapter_format == "lora-fp16" else \
            trainable_branch(r.fitted, a, b, lora.scaling(r.name))
        model.get_submodule(module_path(r.name)).branch = branch
    inputs = base.inputs(seed, batch=1, seq=tokens)
    st = whole_step_state(model, base.wrapper(), inputs)
    return {**asdict(st), "total": st.total, "tokens": tokens,
            "counted": "the whole model's step (1 sequence of `tokens`): frozen weights as stored, trainable "
                       "parameters, gradients and Adam moments as allocated, tensors autograd saved for backward "
                       "(distinct storages); not allocator slack or per-op temporaries"}
