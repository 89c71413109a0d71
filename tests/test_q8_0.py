"""The Q8_0 LM head (--head q8_0): int8 weights with a scale per 32, activations quantized per 32 at run time.
One semantics in four places (the interpreter, the ONNX function body onnxruntime runs, the torch op the
export is checked against, the AVX2 kernel and the reference Relax lowering), each checked against the
interpreter, and the head end to end through export, compile and verification."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import tvm
from onnx import TensorProto, helper, numpy_helper
from onnx_util import run_ort

from hwsim import interp
from hwsim.errors import HwsimError
from hwsim.frontend import import_model
from hwsim.interp import quantize_blocks
from hwsim.ir import Op
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
from models.formats.q8_0 import Q80
from models.onnx_functions import attach_functions

RNG = np.random.default_rng(8)


def _host() -> tvm.target.Target:
    from codegen import host
    from targets import load_target

    return host.tvm_target(load_target("host"))


def _has_avx2() -> bool:
    from codegen.kernels.q8 import has_pmaddwd

    return has_pmaddwd(_host())


def _q8_model(x: np.ndarray, w: Q80) -> onnx.ModelProto:
    node = helper.make_node("Q8MatMul", ["x", "q", "d"], ["y"], domain="ai.hwsim", name="head")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(w.q, "q"), numpy_helper.from_array(w.d, "d")])
    return attach_functions(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10))


def _ties() -> np.ndarray:
    """A block whose scale is exactly 1 (max 127), so x / d lands on halves: ties round to even."""
    x = np.zeros(64, np.float32)
    x[:8] = [127, 2.5, -3.5, 0.5, -0.5, 1.5, 126.5, -2.5]
    x[32:] = RNG.standard_normal(32)
    return x


def test_quantize_blocks_rounds_ties_to_even_and_keeps_zero_blocks() -> None:
    x = np.concatenate([_ties(), np.zeros(32, np.float32)])[None]
    q, d = quantize_blocks(x, 32)
    assert d[0, 0] == 1.0 and d[0, 2] == 0.0
    assert q[0, :8].tolist() == [127, 2, -4, 0, 0, 2, 126, -2]
    assert not q[0, 64:].any() and np.abs(q).max() <= 127


def test_interpreter_is_the_dequantized_matmul() -> None:
    x, w = RNG.standard_normal((3, 96)).astype(np.float32), Q80.fit(RNG.standard_normal((40, 96)))
    (got,) = interp.evaluate(Op.Q8_MATMUL, [x, w.q, w.d], {"block": 32})
    q, d = quantize_blocks(x, 32)
    want = (q.reshape(3, 3, 32) * d[..., None]).reshape(3, 96) @ w.reconstruct().T
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_onnx_body_and_torch_op_compute_the_interpreters_semantics() -> None:
    from models.torch_formats import q8_matmul

    x = np.stack([_ties(), RNG.standard_normal(64).astype(np.float32)])
    w = Q80.fit(RNG.standard_normal((24, 64)))
    (want,) = interp.evaluate(Op.Q8_MATMUL, [x, w.q, w.d], {"block": 32})
    (ort_y,) = run_ort(_q8_model(x, w), {"x": x})
    torch_y = q8_matmul(torch.from_numpy(x), torch.from_numpy(w.q), torch.from_numpy(w.d)).numpy()
    for got in (ort_y, torch_y):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_layer_lowers_to_q8_matmul_and_builds_for_the_host_and_by_reference_lowering() -> None:
    from codegen import host
    from codegen.relax_lower import to_relax

    x, w = RNG.standard_normal((1, 2, 64)).astype(np.float32), Q80.fit(RNG.standard_normal((48, 64)))
    graph = import_model(_q8_model(x, w))
    run_pipeline(graph, DEFAULT_PIPELINE)
    assert [n.op for n in graph.nodes] == [Op.Q8_MATMUL] and graph.layers[0].lowered
    (want,) = interp.run(graph, {"x": x})
    for target in (_host(), None):  # the CPU kernel, then the reference lowering
        mod = to_relax(graph, target)
        assert any(g.name_hint.startswith("dense_q8_0") for g in mod.get_global_vars()) == (target is not None)
        vm = tvm.relax.VirtualMachine(host.build(mod, _host()), tvm.cpu())
        (got,) = host.run(vm, [x])
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("pmaddwd", [True, False], ids=["avx2", "portable"])
@pytest.mark.parametrize("m, n, k, threads", [(1, 4096, 576, 2), (1, 48, 64, 1), (16, 64, 96, 2), (3, 40, 32, 2)])
def test_kernel_matches_the_interpreter(m: int, n: int, k: int, threads: int, pmaddwd: bool) -> None:
    from codegen.kernels.q8 import q8_kernel, q8_layout

    if pmaddwd and not _has_avx2():
        pytest.skip("vpmaddwd needs AVX2")

    x, w = RNG.standard_normal((m, k)).astype(np.float32), Q80.fit(RNG.standard_normal((n, k)))
    (want,) = interp.evaluate(Op.Q8_MATMUL, [x, w.q, w.d], {"block": 32})
    q, d = quantize_blocks(x, 32)
    panels, scales = q8_layout(w.q, w.d)
    lib = tvm.tirx.build(tvm.IRModule({"k": q8_kernel(m, n, k, "k", threads, pmaddwd)}), target=_host())
    y = tvm.runtime.empty((m, n // 8, 8), "float32")
    lib["k"](*(tvm.runtime.tensor(a) for a in (q.astype(np.int16), d, panels, scales)), y)
    np.testing.assert_allclose(y.numpy().reshape(m, n), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_tiny_llama_q8_head_exports_compiles_and_verifies(tmp_path: Path) -> None:
    """The tied embedding and LM head in Q8_0 (tiny-llama's tied here, as SmolLM2's are): exported (checked
    against torch), one Q8_MATMUL in the IR, the host (vpmaddwd where the CPU has AVX2) and cortex-a76
    (portable: smlal, under qemu) builds verified."""
    from hwsim.api import compile_model
    from models.variants import apply_formats, export_variant, load_adapter_for, load_base

    base = load_base("tiny-llama")
    base.model.lm_head.weight = base.model.get_input_embeddings().weight  # tied, as SmolLM2's are
    report = apply_formats(base, load_adapter_for(base, None), "lordba", "ternary", head_format="q8_0")
    assert report.head_format == "q8_0" and 0 < report.head_rel_error < 0.01
    info = export_variant(base, tmp_path / "m.onnx")
    assert "Q8MatMul" in info["hwsim_ops"] and info["onnxruntime_vs_torch_rel_err"] < 1e-2
    inits = onnx.load(str(tmp_path / "m.onnx")).graph.initializer
    assert sum(t.data_type == TensorProto.INT8 for t in inits) == 1  # one table: the embedding and the head
    for target in ("host", "cortex-a76"):
        m = compile_model(str(tmp_path / "m.onnx"), target=target, shapes={"input_ids": (1, 16)},
                          out=tmp_path / target, runs=3).manifest
        assert m["verification"]["passed"] and m["verification"]["integer_roundings"] == 1
        assert "Q8_MATMUL" in m["ir"]["ops"] and m["memory"]["weight_bytes_by_format"]["Q8_0"] == 512 * 256 * 17 // 16
        assert any(k.startswith("dense_q8_0_16x512x256") for k in m["kernels"])


def test_q8_head_needs_a_low_bit_base_and_a_model_to_format(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hwsim.cli import main
    from models.variants import apply_formats, load_base

    with pytest.raises(HwsimError, match="needs a base format below fp32"):
        apply_formats(load_base("tiny-llama"), None, None, "fp32", head_format="q8_0")
    with pytest.raises(HwsimError, match="unknown head format 'q4'"):
        apply_formats(load_base("tiny-llama"), None, None, "fp16", head_format="q4")
    onnx.save(_q8_model(np.zeros((1, 64), np.float32), Q80.fit(np.ones((8, 64)))), tmp_path / "m.onnx")
    res = CliRunner().invoke(main, ["compile", str(tmp_path / "m.onnx"), "--head", "q8_0"])
    assert res.exit_code == 2 and "is an ONNX file, compiled as it is" in res.output
