"""The pass that turns ai.hwsim format layers into SIGN/TERNARY_ACCUMULATE ops (a Q8_0 matmul into Q8_MATMUL):
one before/expected case per format, and layers it cannot match stay dense with the reason recorded."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_util import run_ort

from hwsim import interp
from hwsim.frontend import import_model
from hwsim.ir import Op
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
from models.formats import Dbf, Lordba, Mdbf, Ternary, TritPlane
from models.formats.q8_0 import Q80
from models.onnx_functions import SIGNATURES, attach_functions

RNG = np.random.default_rng(11)
N, M, R = 24, 64, 8  # M: two Q8_0 blocks
A, B = RNG.standard_normal((R, M)), RNG.standard_normal((N, R))
W = RNG.standard_normal((N, M))


def _inputs(op_type: str) -> dict[str, np.ndarray]:
    if op_type in ("LoRDBA", "LoRDBARank"):
        p = Lordba.fit(A, B, 2.0, layout="channel" if op_type == "LoRDBA" else "rank").pack()
        return {"signs_A": p["signs_A"], "signs_B": p["signs_B"], "mu": p["mu"]} | (
            {"u": p["u"], "v": p["v"]} if op_type == "LoRDBA" else {})
    if op_type == "DBF":
        p = Dbf.fit(W, bpw=2.0, iters=2).pack()
        return {k: p[k] for k in ("signs_A", "signs_B", "a", "mu", "b")}
    if op_type == "MDBFPath":
        p = Mdbf.fit(W, bpw=3.0, l=2, iters=2).pack()
        return {k: p[f"p0.{k}"] for k in ("signs_A", "signs_B", "A_amp", "Q_U", "Q_V", "B_amp")}
    if op_type == "Q8MatMul":
        f = Q80.fit(W)
        return {"q": f.q, "d": f.d}
    if op_type == "TernaryMatMul":
        t = Ternary.fit(W)
        return {"trits": t.pack()["trits"], "scale": np.array(t.gamma, np.float32)}
    p = TritPlane.fit(W, iters=3).pack()
    return {"T1": p["T1"], "T2": p["T2"], "alpha1": p["alpha1"], "alpha2": p["alpha2"]}


def layer_model(op_type: str, runtime: tuple[str, ...] = ()) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """x [2, M] -> Relu(ai.hwsim op(x, packed...)): one format layer between two ordinary ops."""
    consts = _inputs(op_type)
    feeds = {"x": RNG.standard_normal((2, M)).astype(np.float32)} | {k: consts[k] for k in runtime}
    inputs = [helper.make_tensor_value_info(k, onnx.helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
              for k, v in feeds.items()]
    nodes = [helper.make_node(op_type, SIGNATURES[op_type], ["h"], domain="ai.hwsim", name="layer"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items() if k not in runtime]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    return attach_functions(model), feeds


EXPECTED = {  # (op, pre, post) of each accumulate node, in order
    "LoRDBA": [(Op.SIGN_ACCUMULATE, 1, 1), (Op.SIGN_ACCUMULATE, 0, 1)],
    "LoRDBARank": [(Op.SIGN_ACCUMULATE, 0, 1), (Op.SIGN_ACCUMULATE, 0, 0)],
    "DBF": [(Op.SIGN_ACCUMULATE, 1, 1), (Op.SIGN_ACCUMULATE, 0, 1)],
    "MDBFPath": [(Op.SIGN_ACCUMULATE, 1, 1)] * 4,
    "TernaryMatMul": [(Op.TERNARY_ACCUMULATE, 0, 1)],
    "TritPlane": [(Op.TERNARY_ACCUMULATE, 0, 1)] * 2,
    "Q8MatMul": [],
}


@pytest.mark.parametrize("op_type", list(SIGNATURES))
def test_format_layer_becomes_accumulate_ops(op_type: str) -> None:
    model, feeds = layer_model(op_type)
    graph = import_model(model)
    run_pipeline(graph, DEFAULT_PIPELINE)
    acc = [(n.op, n.attrs["pre"], n.attrs["post"]) for n in graph.nodes if n.op in (Op.SIGN_ACCUMULATE,
                                                                                    Op.TERNARY_ACCUMULATE)]
    assert acc == EXPECTED[op_type]
    kernel_ops = {Op.Q8_MATMUL} if op_type == "Q8MatMul" else {Op.SIGN_ACCUMULATE, Op.TERNARY_ACCUMULATE}
    assert {n.op for n in graph.nodes} <= kernel_ops | {Op.ADD, Op.RELU}
    assert any(n.op in kernel_ops for n in graph.nodes)
    (layer,) = graph.layers
    assert layer.lowered and layer.name == "layer"
    packed = {v.name: v.data for n in graph.nodes for v in n.inputs[1:2]}
    sources = {k: v for k, v in _inputs(op_type).items() if v.dtype in (np.uint8, np.int8)}
    assert all(any(np.array_equal(p, s) for p in packed.values()) for s in sources.values())  # same bytes
    got, want = interp.run(graph, feeds)[0], run_ort(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


def test_layer_that_does_not_match_stays_dense_and_says_why() -> None:
    model, feeds = layer_model("LoRDBA", runtime=("signs_A",))
    graph = import_model(model)
    run_pipeline(graph, DEFAULT_PIPELINE)
    (layer,) = graph.layers
    assert not layer.lowered and layer.status == "kept dense: input signs_A is not a constant"
    assert not any(n.op is Op.SIGN_ACCUMULATE for n in graph.nodes)
    assert any(n.op is Op.SHIFT_RIGHT for n in graph.nodes)  # the expanded body runs instead
    np.testing.assert_allclose(interp.run(graph, feeds)[0], run_ort(model, feeds)[0], rtol=1e-4, atol=1e-4)


def test_inspect_reports_layers(tmp_path) -> None:
    from click.testing import CliRunner

    from hwsim.cli import main

    model, _ = layer_model("LoRDBA", runtime=("signs_A",))
    onnx.save(model, str(tmp_path / "m.onnx"))
    result = CliRunner().invoke(main, ["inspect", str(tmp_path / "m.onnx"), "--shape", "signs_A=8x8", "--json"])
    assert result.exit_code == 0, result.stderr
    import json

    (layer,) = json.loads(result.stdout)["layers"]
    assert layer == {"name": "layer", "op": "LoRDBA", "lowered": False,
                     "status": "kept dense: input signs_A is not a constant"}


@pytest.mark.parametrize("op_type", ["LoRDBA", "DBF", "TernaryMatMul"])
def test_tvm_build_of_lowered_layers_matches_onnxruntime(op_type: str) -> None:
    """Accumulate ops run through the packed TIR kernels when K fills whole bytes."""
    import tvm
    from tvm import relax

    from codegen import host
    from codegen.relax_lower import to_relax
    from targets import load_target

    model, feeds = layer_model(op_type)
    graph = import_model(model)
    run_pipeline(graph, DEFAULT_PIPELINE)
    mod = to_relax(graph)
    prefix = "ternary_accumulate_" if op_type == "TernaryMatMul" else "sign_accumulate_"
    assert any(gv.name_hint.startswith(prefix) for gv in mod.functions)
    ex = host.build(mod, host.tvm_target(load_target("host")))
    got = host.run(relax.VirtualMachine(ex, tvm.cpu()), [feeds["x"]])[0]
    want = run_ort(model, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
