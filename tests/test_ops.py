"""Every ONNX op the frontend accepts: interpreter and TVM build both match onnxruntime.

One case per op (plus opset variants where the op's signature changed), random shapes from a seeded
generator. The interpreter defines the IR's semantics; the TVM check covers each Relax lowering.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from onnx import TensorProto, numpy_helper
from onnx_util import run_ort, single_node_model

from hwsim import interp
from hwsim.frontend import import_model
from hwsim.ir import Graph
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
from hwsim.reference import compare

RNG = np.random.default_rng(1234)


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def pos(*shape: int) -> np.ndarray:
    return (RNG.random(shape) + 0.5).astype(np.float32)


def i64(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@dataclass
class Case:
    id: str
    op: str
    feeds: dict[str, np.ndarray]
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    inputs: list[str] | None = None
    attrs: dict[str, Any] = field(default_factory=dict)
    opset: int = 18
    outputs: int = 1


def _shape() -> tuple[int, ...]:
    return tuple(int(d) for d in RNG.integers(2, 6, size=int(RNG.integers(2, 4))))


S = _shape()
x_nan = f32(3, 4)
x_nan[0, 1] = np.nan

CASES = [
    Case("MatMul", "MatMul", {"a": f32(2, 3, 5, 7)}, {"b": f32(7, 4)}),
    Case("MatMul-batched", "MatMul", {"a": f32(2, 5, 7), "b": f32(2, 7, 3)}),
    Case("Gemm", "Gemm", {"a": f32(4, 6)}, {"b": f32(5, 6), "c": f32(5)}, attrs={"transB": 1, "alpha": 0.5,
                                                                             "beta": 2.0}),
    Case("Gemm-transA", "Gemm", {"a": f32(6, 4), "b": f32(6, 5)}, attrs={"transA": 1}),
    Case("Add", "Add", {"a": f32(*S), "b": f32(S[-1])}),
    Case("Sub", "Sub", {"a": f32(*S), "b": f32(*S)}),
    Case("Mul", "Mul", {"a": f32(*S), "b": f32(1, S[-1])}),
    Case("Div", "Div", {"a": f32(*S), "b": pos(*S)}),
    Case("Div-int", "Div", {"a": np.array([7, -7, 9, -9], np.int64), "b": np.array([2, 2, -4, -4], np.int64)}),
    Case("Pow", "Pow", {"a": pos(*S)}, {"b": np.array(2.0, np.float32)}),
    Case("Pow-int-exponent", "Pow", {"a": pos(3, 4)}, {"b": np.array(3, np.int64)}),
    Case("Sqrt", "Sqrt", {"x": pos(*S)}),
    Case("Reciprocal", "Reciprocal", {"x": pos(*S)}),
    Case("Neg", "Neg", {"x": f32(*S)}),
    Case("Relu", "Relu", {"x": f32(*S)}),
    Case("Gelu", "Gelu", {"x": f32(*S)}, opset=20),
    Case("Gelu-tanh", "Gelu", {"x": f32(*S)}, attrs={"approximate": "tanh"}, opset=20),
    Case("Erf", "Erf", {"x": f32(*S)}),
    Case("Sigmoid", "Sigmoid", {"x": f32(*S)}),
    Case("Tanh", "Tanh", {"x": f32(*S)}),
    Case("Exp", "Exp", {"x": f32(*S)}),
    Case("Log", "Log", {"x": pos(*S)}),
    Case("Sin", "Sin", {"x": f32(*S)}),
    Case("Cos", "Cos", {"x": f32(*S)}),
    Case("Abs", "Abs", {"x": f32(*S)}),
    Case("Floor", "Floor", {"x": f32(*S) * 3}),
    Case("Round", "Round", {"x": np.concatenate([np.arange(-3.5, 4, 0.5), f32(9) * 3]).astype(np.float32)}),
    Case("Ceil", "Ceil", {"x": f32(*S) * 3}),
    Case("Softmax", "Softmax", {"x": f32(*S)}),
    Case("Softmax-axis0", "Softmax", {"x": f32(*S)}, attrs={"axis": 0}),
    Case("LayerNormalization", "LayerNormalization", {"x": f32(2, 5, 8)}, {"s": f32(8), "b": f32(8)},
         attrs={"epsilon": 1e-5}),
    Case("LayerNormalization-axis", "LayerNormalization", {"x": f32(2, 5, 8)}, {"s": f32(5, 8)},
         attrs={"axis": -2}),
    Case("ReduceMean-13", "ReduceMean", {"x": f32(*S)}, attrs={"axes": [-1]}, opset=13),
    Case("ReduceMean-18", "ReduceMean", {"x": f32(*S)}, {"axes": i64(0)}, attrs={"keepdims": 0}),
    Case("ReduceSum", "ReduceSum", {"x": f32(*S)}, {"axes": i64(-1)}),
    Case("ReduceSum-all", "ReduceSum", {"x": f32(*S)}, attrs={"keepdims": 0}),
    Case("ReduceMax", "ReduceMax", {"x": f32(*S)}, {"axes": i64(1)}),
    Case("ReduceL2", "ReduceL2", {"x": f32(*S)}, {"axes": i64(-1)}, attrs={"keepdims": 1}),
    Case("Cast", "Cast", {"x": f32(*S) * 4}, attrs={"to": TensorProto.INT64}),
    Case("Cast-fp16", "Cast", {"x": f32(*S)}, attrs={"to": TensorProto.FLOAT16}),
    Case("CastLike", "CastLike", {"x": f32(3, 4)}, {"like": np.zeros(1, np.float16)}),
    Case("Reshape", "Reshape", {"x": f32(2, 3, 4)}, {"shape": i64(0, -1)}),
    Case("Flatten", "Flatten", {"x": f32(2, 3, 4)}, attrs={"axis": 2}),
    Case("Transpose", "Transpose", {"x": f32(2, 3, 4)}, attrs={"perm": [2, 0, 1]}),
    Case("Concat", "Concat", {"a": f32(2, 3), "b": f32(2, 5)}, attrs={"axis": 1}),
    Case("Split-13", "Split", {"x": f32(6, 4)}, {"split": i64(2, 4)}, opset=13, outputs=2),
    Case("Split-18", "Split", {"x": f32(4, 7)}, attrs={"axis": 1, "num_outputs": 3}, outputs=3),
    Case("Slice", "Slice", {"x": f32(5, 6)}, {"s": i64(1, -4), "e": i64(4, 100), "ax": i64(0, 1), "st": i64(1, 2)}),
    Case("Slice-reverse", "Slice", {"x": f32(5, 6)}, {"s": i64(-1), "e": i64(-10**18), "ax": i64(1),
                                                     "st": i64(-2)}),
    Case("Gather", "Gather", {"x": f32(10, 4), "i": np.array([[1, 9], [-1, 0]], np.int64)}),
    Case("Gather-axis1", "Gather", {"x": f32(3, 10)}, {"i": i64(2, -3)}, attrs={"axis": 1}),
    Case("GatherElements", "GatherElements", {"x": f32(3, 4), "i": RNG.integers(-3, 3, (3, 2))},
         attrs={"axis": 0}),
    Case("GatherND", "GatherND", {"x": f32(3, 4, 5), "i": np.array([[0, 1], [2, 3]], np.int64)}),
    Case("Unsqueeze-13", "Unsqueeze", {"x": f32(3, 4)}, {"axes": i64(0, -1)}, opset=13),
    Case("Squeeze", "Squeeze", {"x": f32(3, 1, 4, 1)}, {"axes": i64(1)}),
    Case("Squeeze-all", "Squeeze", {"x": f32(3, 1, 4, 1)}),
    Case("Expand", "Expand", {"x": f32(3, 1)}, {"shape": i64(2, 3, 4)}),
    Case("Where", "Where", {"c": RNG.random(S) > 0.5, "a": f32(*S), "b": f32(S[-1])}),
    Case("Equal", "Equal", {"a": RNG.integers(0, 3, S), "b": RNG.integers(0, 3, S)}),
    Case("Less", "Less", {"a": f32(*S), "b": f32(*S)}),
    Case("LessOrEqual", "LessOrEqual", {"a": f32(*S), "b": f32(*S)}),
    Case("Greater", "Greater", {"a": f32(*S), "b": f32(*S)}),
    Case("GreaterOrEqual", "GreaterOrEqual", {"a": f32(*S), "b": f32(*S)}),
    Case("And", "And", {"a": RNG.random(S) > 0.5, "b": RNG.random(S) > 0.5}),
    Case("Or", "Or", {"a": RNG.random(S) > 0.5, "b": RNG.random(S) > 0.5}),
    Case("Not", "Not", {"a": RNG.random(S) > 0.5}),
    Case("Max", "Max", {"a": f32(*S), "b": f32(*S), "c": f32(*S)}),
    Case("Min", "Min", {"a": f32(*S), "b": f32(*S)}),
    Case("Clip", "Clip", {"x": f32(*S)}, {"lo": np.array(-0.5, np.float32), "hi": np.array(0.7, np.float32)}),
    Case("Clip-min-only", "Clip", {"x": f32(*S)}, {"lo": np.array(-0.5, np.float32)}),
    Case("BitShift", "BitShift", {"x": RNG.integers(0, 256, (4, 6)).astype(np.uint8)},
         {"s": np.array([0, 1, 2, 3, 4, 5], np.uint8)}, attrs={"direction": "RIGHT"}),
    Case("BitShift-left", "BitShift", {"x": RNG.integers(0, 16, (4, 6)).astype(np.uint8)},
         {"s": np.array([1], np.uint8)}, attrs={"direction": "LEFT"}),
    Case("BitwiseAnd", "BitwiseAnd", {"x": RNG.integers(0, 256, (4, 6)).astype(np.uint8)},
         {"m": np.array(3, np.uint8)}),
    Case("Sum", "Sum", {"a": f32(*S), "b": f32(*S), "c": f32(S[-1])}),
    Case("IsNaN", "IsNaN", {"x": x_nan}),
    Case("Identity", "Identity", {"x": f32(*S)}),
    Case("Dropout", "Dropout", {"x": f32(*S)}),
    Case("Trilu", "Trilu", {"x": f32(2, 4, 5)}),
    Case("Trilu-lower-k", "Trilu", {"x": f32(4, 5)}, {"k": i64(1)}, attrs={"upper": 0}),
    Case("CumSum", "CumSum", {"x": f32(3, 4)}, {"axis": i64(1)}),
    Case("CumSum-reverse-exclusive", "CumSum", {"x": f32(3, 4)}, {"axis": i64(0)},
         attrs={"reverse": 1, "exclusive": 1}),
    Case("Shape", "Shape", {"x": f32(*S)}),
    Case("Shape-slice", "Shape", {"x": f32(2, 3, 4)}, attrs={"start": 1}),
    Case("Size", "Size", {"x": f32(*S)}),
    Case("ConstantOfShape", "ConstantOfShape", {}, {"s": i64(2, 3)},
         attrs={"value": numpy_helper.from_array(np.array([1.5], np.float32))}),
    Case("Range", "Range", {}, {"s": np.array(1, np.int64), "l": np.array(9, np.int64),
                                "d": np.array(3, np.int64)}),
    Case("Constant", "Constant", {}, attrs={"value": numpy_helper.from_array(f32(2, 2))}),
    Case("Constant-ints", "Constant", {}, attrs={"value_ints": [1, 2, 3]}),
]


def _model(case: Case):
    return single_node_model(case.op, case.feeds, case.consts, inputs=case.inputs, n_outputs=case.outputs,
                             opset=case.opset, **case.attrs)


def _reference_and_graph(case: Case) -> tuple[list[np.ndarray], Graph]:
    model = _model(case)
    graph = import_model(model)
    run_pipeline(graph, DEFAULT_PIPELINE)
    return run_ort(model, case.feeds), graph


def _assert_matches(case: Case, ref: list[np.ndarray], got: list[np.ndarray], rtol: float) -> None:
    for r, g in zip(ref, got, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        c = compare(case.id, g, r, rtol=rtol)
        assert c.ok, c.describe()


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_interpreter_matches_onnxruntime(case: Case) -> None:
    ref, graph = _reference_and_graph(case)
    _assert_matches(case, ref, interp.run(graph, case.feeds), rtol=1e-5)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_tvm_host_build_matches_onnxruntime(case: Case) -> None:
    import tvm
    from tvm import relax

    from codegen import host
    from codegen.relax_lower import to_relax
    from targets import load_target

    ref, graph = _reference_and_graph(case)
    ex = host.build(to_relax(graph), host.tvm_target(load_target("host")))
    got = host.run(relax.VirtualMachine(ex, tvm.cpu()), [case.feeds[v.name] for v in graph.inputs])
    _assert_matches(case, ref, got, rtol=1e-4)


def test_every_required_op_has_a_case() -> None:
    required = {"MatMul", "Gemm", "Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Reciprocal", "Neg", "Relu", "Gelu",
                "Erf", "Sigmoid", "Tanh", "Softmax", "LayerNormalization", "ReduceMean", "ReduceSum", "Cast",
                "Reshape", "Transpose", "Concat", "Split", "Slice", "Gather", "Unsqueeze", "Squeeze", "Expand",
                "Where", "Shape", "Constant", "ConstantOfShape", "Range", "Equal", "Identity", "Trilu", "IsNaN",
                "GatherElements"}
    assert required <= {c.op for c in CASES}
    from hwsim.frontend.onnx_ops import CONVERTERS

    assert set(CONVERTERS) <= {c.op for c in CASES}, "every converter needs a case"


def test_runtime_range_is_rejected_with_the_node_name() -> None:
    from hwsim.errors import HwsimError

    feeds = {"n": np.array(5, np.int64)}
    model = single_node_model("Range", feeds, {"s": np.array(0, np.int64), "d": np.array(1, np.int64)},
                              inputs=["s", "n", "d"])
    with pytest.raises(HwsimError, match=r"node 'the_range'.*must be a constant"):
        import_model(model)
