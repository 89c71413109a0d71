"""Sign-form LoRDBA training: the module computes LoRDBA, learns through the STE, and its training
memory is measured (not computed from a formula) against an fp32-trained LoRA branch."""

import numpy as np
import torch

from models.formats import Lordba
from models.sign_training import LoraBranch, SignLoraBranch, training_state_bytes

RNG = np.random.default_rng(3)


def fitted(n: int = 64, m: int = 48, r: int = 16) -> tuple[Lordba, np.ndarray, np.ndarray]:
    a, b = RNG.standard_normal((r, m)), RNG.standard_normal((n, r))
    return Lordba.fit(a, b, 2.0), a, b


def test_sign_branch_computes_the_fitted_lordba() -> None:
    f, _, _ = fitted()
    x = RNG.standard_normal((5, 48)).astype(np.float32)
    with torch.no_grad():
        y = SignLoraBranch(f)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, f.forward(x), rtol=1e-3, atol=1e-3)


def test_ste_training_reduces_the_loss() -> None:
    f, a, b = fitted()
    target = 2.0 * b @ a
    branch = SignLoraBranch(f)
    opt = torch.optim.Adam(branch.parameters(), lr=3e-3)
    x = torch.from_numpy(RNG.standard_normal((256, 48)).astype(np.float32))
    want = x @ torch.from_numpy(target.astype(np.float32)).T
    losses = []
    for _ in range(200):
        loss = ((branch(x) - want) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-20:]) < 0.9 * losses[0]  # sign flips beyond the closed-form scale optimum
    assert branch.latent_a.grad is not None and branch.latent_a.grad.abs().sum() > 0  # gradients reach signs


def test_training_memory_is_measured_against_lora() -> None:
    f, a, b = fitted(256, 256, 16)
    x = torch.from_numpy(RNG.standard_normal((128, 256)).astype(np.float32))
    sign = training_state_bytes(SignLoraBranch(f), x)
    lora = training_state_bytes(LoraBranch(a, b, 2.0), x)
    r, n, m = 16, 256, 256
    assert lora.params == 4 * r * (n + m)
    assert sign.params == 4 * (r * (n + m) + n + m + r)  # latents + the three scale vectors
    assert sign.optimizer == 2 * sign.params and sign.grads == sign.params
    assert sign.saved_activations > lora.saved_activations  # STE inputs and unpacked signs are kept
    assert 1.0 < sign.total / lora.total < 10.0
