"""Training LoRDBA in sign form on device: latent float factors, a straight-through sign, trainable scales.

Forward: base(x) + u * sign(B~)(mu * sign(A~)(v * x)); backward passes gradients through sign() as if it
were the identity where |latent| <= 1 (the clipped STE of BinaryConnect / LittleBit). What this costs in
memory, against an fp LoRA branch trained the usual way (fp32 factors, as PEFT keeps them), is measured on a
real step (`whole_step_state`: the whole model, base frozen; `training_state_bytes`: one branch alone):
parameters, gradients and Adam moments of the trainable tensors as allocated, every tensor autograd saves for
the backward pass (saved-tensor hooks, distinct storages) and the frozen weights as stored. Ternary and
trit-plane adapters train their latent fp32 factors through BitNet's absmean ternary quantiser with the same
STE (`TernaryLoraBranch`; a trit-plane adapter's latents go through the two-plane fit in the forward instead).
"""

from dataclasses import dataclass

import numpy as np
import torch

from models.formats.lora import Lordba


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(w)
        return torch.where(w >= 0, 1.0, -1.0).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= 1).to(grad.dtype)


def _fp16(t: torch.Tensor) -> torch.Tensor:
    """Round to fp16 in the forward (the packed format stores scales in fp16), identity gradient."""
    return t + (t.half().float() - t).detach()


class SignLoraBranch(torch.nn.Module):
    """The LoRDBA branch with trainable latent factors and channel scales (channel layout). Its forward is the
    packed format's (fp16 scales), so the exported adapter computes exactly what was trained."""

    def __init__(self, fitted: Lordba):
        super().__init__()
        if fitted.layout != "channel":
            raise ValueError("sign-form training uses the channel layout (u, mu, v)")
        f32 = lambda a: torch.nn.Parameter(torch.from_numpy(np.asarray(a, np.float32).copy()))  # noqa: E731
        # latents start at +-0.5 (inside the STE's pass-through band) with the fitted signs
        self.latent_a, self.latent_b = f32(0.5 * fitted.sa), f32(0.5 * fitted.sb)
        self.u, self.mu, self.v = f32(fitted.u), f32(fitted.mu), f32(fitted.v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sa, sb = _SignSTE.apply(self.latent_a), _SignSTE.apply(self.latent_b)
        return ((((x * _fp16(self.v)) @ sa.T) * _fp16(self.mu)) @ sb.T) * _fp16(self.u)


class _TernarySTE(torch.autograd.Function):
    """BitNet b1.58 absmean ternarisation, gamma * round(clip(w / gamma, -1, 1)), identity gradient."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        gamma = w.abs().mean().clamp_min(1e-8)
        return (w / gamma).round().clamp(-1, 1) * gamma

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _TritPlaneSTE(torch.autograd.Function):
    """PTQTP's two-plane fit of the latent factor (models/formats/ternary.py), identity gradient."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        from models.formats.ternary import TritPlane

        fit = TritPlane.fit(w.detach().double().numpy())
        return torch.from_numpy(fit.reconstruct().astype(np.float32)).to(w.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        return grad


class LoraBranch(torch.nn.Module):
    """A plain LoRA branch with trainable fp32 factors: the baseline for training memory."""

    def __init__(self, a: np.ndarray, b: np.ndarray, scaling: float):
        super().__init__()
        self.a = torch.nn.Parameter(torch.from_numpy(np.asarray(a, np.float32).copy()))
        self.b = torch.nn.Parameter(torch.from_numpy(np.asarray(b, np.float32).copy()))
        self.scaling = scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.a.T) @ self.b.T * self.scaling


class TernaryLoraBranch(LoraBranch):
    """A LoRA branch whose factors are ternarised in the forward pass (quantisation-aware training); with
    `planes` 2, each factor is fitted as two trit-planes instead."""

    def __init__(self, a: np.ndarray, b: np.ndarray, scaling: float, planes: int = 1):
        super().__init__(a, b, scaling)
        self.quantise = _TernarySTE.apply if planes == 1 else _TritPlaneSTE.apply

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.quantise(self.a).T) @ self.quantise(self.b).T * self.scaling


@dataclass(frozen=True)
class TrainingState:
    params: int
    grads: int
    optimizer: int  # Adam: two moments per trainable element
    saved_activations: int  # what autograd keeps for backward (STE inputs, unpacked signs, activations)
    frozen_weights: int = 0  # the frozen base (and buffers) as stored, for a whole-model step

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.saved_activations + self.frozen_weights


def _storages(tensors) -> dict[int, int]:
    return {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}


def _step_state(model: torch.nn.Module, params: list[torch.nn.Parameter], loss_of) -> TrainingState:
    """One Adam step of `params` on `loss_of()`, measured: trainable bytes, gradients and optimizer state as
    allocated, tensors autograd saved for backward (distinct storages that are not weights), and the rest of
    `model`'s parameters and buffers (frozen)."""
    trainable = _storages(params)
    weights = _storages([*model.parameters(), *model.buffers()])
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in weights and ptr not in trainable:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    opt = torch.optim.Adam(params, lr=0.0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of()
    loss.backward()
    opt.step()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    moments = sum(t.numel() * t.element_size() for st in opt.state.values() for k, t in st.items()
                  if k != "step" and isinstance(t, torch.Tensor))
    for p in params:
        p.grad = None
    frozen = sum(n for ptr, n in weights.items() if ptr not in trainable)
    return TrainingState(sum(trainable.values()), grads, moments, sum(saved.values()), frozen)


def training_state_bytes(branch: torch.nn.Module, x: torch.Tensor) -> TrainingState:
    """One training step's state for `branch` alone on input `x` (no base model)."""
    params = [p for p in branch.parameters() if p.requires_grad]
    return _step_state(branch, params, lambda: branch(x.requires_grad_(False)).sum())


def whole_step_state(model: torch.nn.Module, run, inputs: tuple[torch.Tensor, ...]) -> TrainingState:
    """One adapter-training step of the whole model (base frozen, the trainable branches already in place):
    `run(*inputs)` is its forward (e.g. the prefill wrapper); the loss is a sum over the output, so the figure
    is the model's, not a loss head's."""
    params = [p for p in model.parameters() if p.requires_grad]
    return _step_state(model, params, lambda: run(*inputs).float().sum())
