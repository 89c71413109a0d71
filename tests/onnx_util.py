"""Build small ONNX models in tests and run them through onnxruntime."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

NP_TO_ONNX = {np.dtype(k): v for k, v in {
    "float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int64": TensorProto.INT64,
    "int32": TensorProto.INT32, "bool": TensorProto.BOOL, "uint8": TensorProto.UINT8}.items()}


def single_node_model(op_type: str, feeds: dict[str, np.ndarray], consts: dict[str, np.ndarray] | None = None,
                      inputs: Sequence[str] | None = None, n_outputs: int = 1, opset: int = 18,
                      **attrs) -> onnx.ModelProto:
    """One `op_type` node reading `inputs` (runtime feeds and initializers, '' for absent ones)."""
    consts = consts or {}
    inputs = list(inputs) if inputs is not None else [*feeds, *consts]
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op_type, inputs, outs, name=f"the_{op_type.lower()}", **attrs)
    graph = helper.make_graph(
        [node], f"single_{op_type}",
        [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in feeds.items()],
        [helper.make_value_info(o, onnx.TypeProto()) for o in outs],
        initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)
