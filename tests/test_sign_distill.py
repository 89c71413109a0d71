"""Sign-form training of converted adapters inside their model: the loss falls, the packed export computes what
was trained (torch and onnxruntime), perplexity agrees between them, and the CLI's training options."""

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from click.testing import CliRunner

from hwsim.cli import main
from models.formats.adapter import fit_adapter
from models.perplexity import corpus_tokens, perplexity_onnx, perplexity_torch
from models.sign_distill import export_branch, trainable_branch
from models.sign_training import whole_step_state
from models.torch_formats import branch_module
from models.variants import apply_formats, export_variant, load_adapter_for, load_base, train_adapter

RNG = np.random.default_rng(5)


@pytest.mark.parametrize("fmt", ["lordba", "ternary", "tritplane"])
def test_a_trained_branch_exports_to_exactly_what_it_computed(fmt: str) -> None:
    """Train a branch away from its conversion; the packed format's forward equals the trained forward."""
    a, b = RNG.standard_normal((8, 48)), RNG.standard_normal((32, 8))
    fitted = fit_adapter(fmt, a, b, 2.0)
    branch = trainable_branch(fitted, a, b, 2.0)
    x = torch.from_numpy(RNG.standard_normal((64, 48)).astype(np.float32))
    want = x @ torch.from_numpy((2.0 * b @ a).astype(np.float32)).T
    opt = torch.optim.Adam(branch.parameters(), lr=5e-2)
    for _ in range(10):
        loss = ((branch(x) - want) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        trained = branch(x).numpy()
        packed = branch_module(export_branch(branch, fitted))(x).numpy()
        start = branch_module(fitted)(x).numpy()
    assert np.abs(trained - start).max() > 1e-2  # it did move
    np.testing.assert_allclose(packed, trained, rtol=1e-5, atol=1e-5 * np.abs(trained).max())


def test_sign_form_training_lowers_the_loss_and_the_onnx_reproduces_it(tmp_path: Path) -> None:
    base = load_base("tiny-llama")
    lora = load_adapter_for(base, None)
    report = apply_formats(base, lora, "lordba", "fp32")
    wrapper = base.wrapper()
    x = base.inputs(0)
    with torch.no_grad():
        before = wrapper(*x).numpy()
    train_adapter(base, lora, report, steps=20)
    t = report.training
    assert t["held_out_loss_after"] < t["held_out_loss_before"]
    assert np.mean(t["loss_trace"][-3:]) < t["loss_trace"][0]
    assert report.modules and all(m["details"]["trained"] for m in report.modules)
    with torch.no_grad():
        after = wrapper(*x).numpy()
    assert np.abs(after - before).max() > 1e-3
    path = tmp_path / "trained.onnx"
    export_variant(base, path)  # raises if onnxruntime and torch disagree on the file
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input_ids": x[0].numpy()})[0]
    np.testing.assert_allclose(got, after, rtol=1e-4, atol=1e-4 * np.abs(after).max())
    ids, info = corpus_tokens(base, windows=2, length=64)
    assert ids.shape == (2, 64) and info["tokens"].startswith("bytes")
    ppl_torch, ppl_ort = perplexity_torch(wrapper, ids), perplexity_onnx(path, ids)
    assert 1.0 < ppl_torch < 1e4 and abs(ppl_ort / ppl_torch - 1) < 1e-4


def test_whole_step_training_memory_counts_the_frozen_base_and_the_branches() -> None:
    sizes = {}
    for fmt in ("lora-fp16", "lordba"):
        base = load_base("tiny-llama")
        lora = load_adapter_for(base, None)
        report = apply_formats(base, lora, fmt, "fp16")
        from models.evaluate import training_step

        sizes[fmt] = training_step(base, lora, report, 16, 0)
        frozen = sum(p.numel() * p.element_size() for p in base.model.parameters() if not p.requires_grad)
        assert sizes[fmt]["frozen_weights"] >= frozen
    r, modules = 16, 4  # q/v in 2 layers, 256 x 256
    assert sizes["lora-fp16"]["params"] == 4 * modules * r * 512  # fp32 factors
    assert sizes["lordba"]["params"] == 4 * modules * (r * 512 + 512 + r)  # latents + u, mu, v
    assert sizes["lordba"]["optimizer"] == 2 * sizes["lordba"]["params"]
    assert sizes["lordba"]["saved_activations"] > sizes["lora-fp16"]["saved_activations"]
    assert sizes["lordba"]["frozen_weights"] == sizes["lora-fp16"]["frozen_weights"]


def test_whole_step_state_of_a_bare_module() -> None:
    lin = torch.nn.Linear(8, 4)
    lin.weight.requires_grad_(False)
    st = whole_step_state(lin, lin, (torch.ones(2, 8),))
    assert st.params == 4 * 4 and st.grads == 4 * 4 and st.optimizer == 2 * 16 and st.frozen_weights == 4 * 32


def test_convert_trains_in_sign_form_and_rejects_what_it_cannot_train(tmp_path: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(main, ["convert", "tiny-llama", "--format", "lordba", "--train", "--steps", "3", "--out",
                             str(tmp_path / "a"), "--json"])
    assert r.exit_code == 0, r.output
    assert '"steps": 3' in r.output and '"trained": true' in r.output
    r = runner.invoke(main, ["convert", "tiny-llama", "--format", "lora-fp16", "--train", "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "--train applies to lordba, ternary, tritplane" in r.output
    assert not (tmp_path / "b").exists()
    r = runner.invoke(main, ["convert", "tiny-llama", "--format", "lordba", "--steps", "3", "--out",
                             str(tmp_path / "c")])
    assert r.exit_code == 2 and "add --train" in r.output
    r = runner.invoke(main, ["compile", "--no-train", "--steps", "3"])
    assert r.exit_code == 2 and "--no-train" in r.output


def test_gradients_flow_through_every_low_bit_base_layer() -> None:
    """Training an adapter on a ternary, trit-plane, DBF or MDBF base backpropagates through the packed ops: the
    input gradient is that of the dense reconstruction."""
    from models.formats import Dbf, Mdbf, Ternary, TritPlane
    from models.torch_formats import FormatLinear

    w = RNG.standard_normal((32, 48))
    for f in (Ternary.fit(w), TritPlane.fit(w), Dbf.fit(w, bpw=2.0, iters=3), Mdbf.fit(w, bpw=2.0, iters=3)):
        x = torch.from_numpy(RNG.standard_normal((5, 48))).float().requires_grad_(True)
        FormatLinear(f, None)(x).pow(2).sum().backward()
        dense = x.detach().clone().requires_grad_(True)
        (dense @ torch.from_numpy(f.reconstruct()).float().T).pow(2).sum().backward()
        # fp32 sums in a different order: compare against the gradient's scale, not element by element at 1e-5
        scale = float(dense.grad.abs().max())
        torch.testing.assert_close(x.grad, dense.grad, rtol=1e-4, atol=1e-5 * scale)
