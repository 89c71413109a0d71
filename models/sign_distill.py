"""Sign-form training of a converted adapter inside its model: the converted LoRDBA (or ternary, trit-plane)
branches start from the plain conversion and their latent factors and scales are trained through the
straight-through quantiser (models/sign_training.py) by distillation: the model's outputs with the trained fp
LoRA adapter, on the same base, are the targets (task-agnostic: no labels; the inputs are the task's held-in
inputs, models/tasks.py). The loss is the relative squared error of the outputs, ||y - y_fp||^2 / ||y_fp||^2.
Base weights stay frozen. The best state on a held-out batch (checked every few steps, the plain conversion
included) is exported to the same packed format, computing exactly what the trained forward computed.
"""

from typing import Any

import numpy as np
import torch

from hwsim.errors import HwsimError
from models.formats.adapter import DEFAULT_TRAIN_STEPS, TRAINABLE, FactorAdapter
from models.formats.base import FitReport, WeightFormat, rel_error
from models.formats.lora import Lordba
from models.formats.ternary import Ternary, TritPlane, absmean_ternarize
from models.peft_io import LoraAdapter, ModuleResult
from models.sign_training import SignLoraBranch, TernaryLoraBranch
from models.torch_formats import Fp32LoraBranch

DEFAULT_LR = 5e-3
BATCHES, BATCH, CHECK_EVERY = 32, 8, 10  # 2,048 distinct training rows at 8 x 16 tokens


def trainable_branch(fitted: WeightFormat, a: np.ndarray, b: np.ndarray, scaling: float) -> torch.nn.Module:
    """The trainable form of a converted module, computing exactly the conversion at the start."""
    if isinstance(fitted, Lordba):
        if fitted.layout != "channel":
            raise HwsimError("sign-form training needs LoRDBA's channel layout (u, mu, v), not --layout rank")
        return SignLoraBranch(fitted)
    if isinstance(fitted, FactorAdapter):  # latents: the fp factors, whose quantisation is the conversion
        return TernaryLoraBranch(a, b, scaling, planes=1 if fitted.name == "ternary" else 2)
    raise HwsimError(f"sign-form training applies to {', '.join(TRAINABLE)} adapters, not {fitted.name}")


def export_branch(branch: torch.nn.Module, fitted: WeightFormat) -> WeightFormat:
    """The trained branch in its packed format (the forward's own quantisation of the trained latents)."""
    def np64(t: torch.Tensor) -> np.ndarray:
        return t.detach().double().numpy()

    if isinstance(branch, SignLoraBranch):
        signs = lambda t: np.where(np64(t) >= 0, 1, -1).astype(np.int8)  # noqa: E731  (the STE's forward)
        return Lordba(signs(branch.latent_a), signs(branch.latent_b), np64(branch.u), np64(branch.mu),
                      np64(branch.v))
    assert isinstance(branch, TernaryLoraBranch) and isinstance(fitted, FactorAdapter)
    if fitted.name == "ternary":
        fa, fb = (Ternary(*absmean_ternarize(np64(t).astype(np.float32)), f.packing)
                  for t, f in ((branch.a, fitted.fa), (branch.b, fitted.fb)))
    else:
        fa, fb = (TritPlane.fit(np64(t), packing=f.packing) for t, f in ((branch.a, fitted.fa), (branch.b, fitted.fb)))
    return FactorAdapter(fitted.name, fa, fb, branch.scaling)


def _rel(y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((y - target) ** 2).sum() / (target**2).sum()


def distill(base, lora: LoraAdapter, results: list[ModuleResult], *, steps: int = DEFAULT_TRAIN_STEPS,
            lr: float = DEFAULT_LR, seed: int = 0, seq: int = 16,
            progress: Any = None) -> tuple[list[ModuleResult], dict[str, Any]]:
    """Train `results` (converted modules of `lora`) in sign form inside `base.model`, whose adapted linears
    are AdaptedLinear (their branches are replaced here: trained, packed ones on return)."""
    from models.tasks import train_batches
    from models.torch_formats import branch_module
    from models.variants import module_path

    torch.manual_seed(seed)
    model, wrapper = base.model, base.wrapper()
    for p in model.parameters():
        p.requires_grad_(False)
    sites = [model.get_submodule(module_path(r.name)) for r in results]
    for site, r in zip(sites, results, strict=True):
        site.branch = Fp32LoraBranch(*lora.modules[r.name], lora.scaling(r.name))
    data = train_batches(base, BATCHES + 1, BATCH, seq)
    with torch.no_grad():
        targets = [wrapper(*x) for x in data]
    students = [trainable_branch(r.fitted, *lora.modules[r.name], lora.scaling(r.name)) for r in results]
    for site, s in zip(sites, students, strict=True):
        site.branch = s
    opt = torch.optim.Adam([p for s in students for p in s.parameters()], lr=lr)

    def held_out() -> float:
        with torch.no_grad():
            return float(_rel(wrapper(*data[-1]), targets[-1]))

    best = start = held_out()
    best_state = [{k: v.clone() for k, v in s.state_dict().items()} for s in students]
    losses, checks = [], [(0, start)]
    for step in range(1, steps + 1):
        i = (step - 1) % BATCHES
        loss = _rel(wrapper(*data[i]), targets[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
        if step % CHECK_EVERY == 0 or step == steps:
            now = held_out()
            checks.append((step, now))
            if now < best:
                best, best_state = now, [{k: v.clone() for k, v in s.state_dict().items()} for s in students]
            if progress:
                progress(f"sign-form training: step {step}/{steps}, held-out loss {now:.4f} (start {start:.4f})")
    trained = []
    for site, s, state, r in zip(sites, students, best_state, results, strict=True):
        s.load_state_dict(state)
        out = export_branch(s, r.fitted)
        a, b = lora.modules[r.name]
        dw = lora.scaling(r.name) * b.astype(np.float64) @ a.astype(np.float64)
        out.report = FitReport(rel_error(dw, out.reconstruct()),
                               {"trained": True, "conversion_rel_error": r.fitted.report.rel_error})
        site.branch = branch_module(out)
        trained.append(ModuleResult(r.name, r.shape, r.rank, out, r.lora_fp16_bits))
    info = {"steps": steps, "lr": lr, "batches": BATCHES, "batch": BATCH, "tokens": seq,
            "loss": "relative squared error of the outputs vs the fp LoRA adapter's, same base",
            "held_out_loss_before": start, "held_out_loss_after": best,
            "best_step": min((s for s, v in checks if v == best), default=0),
            "loss_trace": [round(x, 5) for x in losses[:: max(1, len(losses) // 20)]]}
    return trained, info
