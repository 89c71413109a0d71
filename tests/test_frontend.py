"""ONNX import details: external data, opset range, shape-subgraph folding, Gemm decomposition."""

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_util import run_ort, single_node_model

from hwsim import interp
from hwsim.errors import HwsimError
from hwsim.frontend import import_model, import_onnx
from hwsim.ir import Op
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline


def test_external_data_is_read(tmp_path: Path) -> None:
    w = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    x = np.ones((2, 64), np.float32)
    model = single_node_model("MatMul", {"x": x}, {"w": w})
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="ext.data",
              size_threshold=0)
    assert (tmp_path / "ext.data").stat().st_size == w.nbytes
    graph = import_onnx(path)
    np.testing.assert_allclose(interp.run(graph, {"x": x})[0], x @ w, rtol=1e-6)


def test_missing_external_data_is_one_clear_error(tmp_path: Path) -> None:
    model = single_node_model("MatMul", {"x": np.ones((2, 64), np.float32)}, {"w": np.ones((64, 4), np.float32)})
    path = tmp_path / "ext.onnx"
    onnx.save(model, str(path), save_as_external_data=True, location="gone.data", size_threshold=0)
    (tmp_path / "gone.data").unlink()
    with pytest.raises(HwsimError, match="cannot read external data"):
        import_onnx(path)


@pytest.mark.parametrize("opset", [11, 22])
def test_opset_outside_13_to_21_is_rejected(tmp_path: Path, opset: int) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(single_node_model("Relu", {"x": np.ones(3, np.float32)}, opset=opset), str(path))
    with pytest.raises(HwsimError, match=f"opset {opset} is not supported"):
        import_onnx(path)


def test_shape_subgraph_folds_to_a_static_reshape() -> None:
    """x.reshape(x.shape[0], -1) as exporters write it: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "zero"], ["d0"], axis=0),
        helper.make_node("Unsqueeze", ["d0", "ax0"], ["d0v"]),
        helper.make_node("Concat", ["d0v", "minus1"], ["shape"], axis=0),
        helper.make_node("Reshape", ["x", "shape"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.array(0, np.int64), "zero"),
                     numpy_helper.from_array(np.array([0], np.int64), "ax0"),
                     numpy_helper.from_array(np.array([-1], np.int64), "minus1")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    g = import_model(model, {"x": (5, 3, 4)})
    run_pipeline(g, DEFAULT_PIPELINE)
    assert [(n.op, n.attrs) for n in g.nodes] == [(Op.RESHAPE, {"shape": (5, 12)})]
    x = np.random.default_rng(0).standard_normal((5, 3, 4)).astype(np.float32)
    np.testing.assert_array_equal(interp.run(g, {"x": x})[0], run_ort(model, {"x": x})[0])


def test_gemm_with_constant_weight_folds_the_transpose() -> None:
    w = np.arange(12, dtype=np.float32).reshape(3, 4)
    model = single_node_model("Gemm", {"a": np.ones((2, 4), np.float32)}, {"b": w}, transB=1)
    g = import_model(model)
    assert [n.op for n in g.nodes] == [Op.MATMUL]
    np.testing.assert_array_equal(g.nodes[0].inputs[1].data, w.T)


def test_used_optional_output_is_rejected() -> None:
    x = np.ones((2, 3), np.float32)
    node = helper.make_node("Dropout", ["x"], ["y", "mask"], name="drop")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("mask", TensorProto.BOOL, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    with pytest.raises(HwsimError, match=r"node 'drop': Dropout output #1 \('mask'\) is used but not supported"):
        import_model(model)
    assert x.shape == (2, 3)
