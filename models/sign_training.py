"""Training LoRDBA in sign form on device: latent float factors, a straight-through sign, trainable scales.

Forward: base(x) + u * sign(B~)(mu * sign(A~)(v * x)); backward passes gradients through sign() as if it
were the identity where |latent| <= 1 (the clipped STE of BinaryConnect / LittleBit). What this costs in
memory, against an fp16-LoRA branch trained the usual way, is measured by `training_state_bytes`:
parameters, gradients and Adam moments of the trainable tensors, plus every tensor autograd saves for
the backward pass (counted with saved-tensor hooks during a real forward). Ternary and trit-plane adapters
train their latent fp32 factors through BitNet's absmean ternary quantiser with the same STE
(`TernaryLoraBranch`; a trit-plane adapter's planes are refit from the trained latents afterwards).
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


class SignLoraBranch(torch.nn.Module):
    """The LoRDBA branch with trainable latent factors and channel scales (channel layout)."""

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
        return ((((x * self.v) @ sa.T) * self.mu) @ sb.T) * self.u


class _TernarySTE(torch.autograd.Function):
    """BitNet b1.58 absmean ternarisation, gamma * round(clip(w / gamma, -1, 1)), identity gradient."""

    @staticmethod
    def forward(ctx, w: torch.Tensor) -> torch.Tensor:
        gamma = w.abs().mean().clamp_min(1e-8)
        return (w / gamma).round().clamp(-1, 1) * gamma

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
    """A LoRA branch whose factors are ternarised in the forward pass (quantisation-aware training)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ _TernarySTE.apply(self.a).T) @ _TernarySTE.apply(self.b).T * self.scaling


@dataclass(frozen=True)
class TrainingState:
    params: int
    grads: int
    optimizer: int  # Adam: two moments per trainable element
    saved_activations: int  # what autograd keeps for backward (STE inputs, unpacked signs, activations)

    @property
    def total(self) -> int:
        return self.params + self.grads + self.optimizer + self.saved_activations


def training_state_bytes(branch: torch.nn.Module, x: torch.Tensor) -> TrainingState:
    """Measure one training step's state for `branch` on input `x` (the adapter branch only)."""
    params = [p for p in branch.parameters() if p.requires_grad]
    nbytes = sum(p.numel() * p.element_size() for p in params)
    saved: dict[int, int] = {}

    param_storage = {p.untyped_storage().data_ptr() for p in params}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in param_storage:  # parameters (and views of them) are counted
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = branch(x.requires_grad_(False))
    y.sum().backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in params if p.grad is not None)
    return TrainingState(nbytes, grads, 2 * nbytes, sum(saved.values()))


def adapter_training_state(fmt: str, modules: list, tokens: int) -> TrainingState:
    """One training step's state for a whole adapter in `fmt`, summed over its modules (each fed `tokens`
    rows of activations); `modules` are models.peft_io.ModuleResult of that format."""
    from models.formats.lora import LoraFp16

    total = TrainingState(0, 0, 0, 0)
    for res in modules:
        f = res.fitted
        if fmt == "lordba":
            branch: torch.nn.Module = SignLoraBranch(f)
        elif fmt == "lora-fp16":
            assert isinstance(f, LoraFp16)
            branch = LoraBranch(f.a, f.b, f.scaling)
        else:  # ternary / tritplane: latent fp32 factors through the ternary STE
            a, b, s = f.to_lora()
            branch = TernaryLoraBranch(a, b, s)
        x = torch.zeros(tokens, res.shape[1])
        st = training_state_bytes(branch, x)
        total = TrainingState(total.params + st.params, total.grads + st.grads, total.optimizer + st.optimizer,
                              total.saved_activations + st.saved_activations)
    return total
