"""Memory accounting: weight bytes per format and liveness-based peak activation bytes."""

import numpy as np

from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
from hwsim.memory import memory_report, peak_activation_bytes
from hwsim.passes import DEFAULT_PIPELINE, run_pipeline

F32 = DType.FLOAT32


def chain(sizes: list[int]) -> Graph:
    """x -> relu -> relu ... with the given element counts (reshapes change sizes for free)."""
    x = Value("x", TensorType((sizes[0],), F32))
    nodes, cur = [], x
    for i, s in enumerate(sizes[1:]):
        out = Value(f"v{i}", TensorType((s,), F32))
        mid = Value(f"m{i}", TensorType((cur.type.size,), F32))
        nodes.append(Node(Op.RELU, [cur], [mid]))
        nodes.append(Node(Op.SLICE, [mid], [out], {"starts": (0,), "ends": (s,), "axes": (0,), "steps": (1,)}))
        cur = out
    return Graph("g", [x], [cur], nodes)


def test_peak_is_the_largest_live_set() -> None:
    g = chain([100, 50, 10])
    # x(100) + m0(100) live together, then m0(100) + v0(50), v0(50) + m1(50), m1(50) + v1(10)
    assert peak_activation_bytes(g) == 4 * 200


def test_values_used_later_stay_live() -> None:
    x = Value("x", TensorType((100,), F32))
    a = Value("a", TensorType((100,), F32))
    b = Value("b", TensorType((100,), F32))
    c = Value("c", TensorType((100,), F32))
    g = Graph("g", [x], [c], [Node(Op.RELU, [x], [a]), Node(Op.NEG, [a], [b]), Node(Op.ADD, [x, b], [c])])
    assert peak_activation_bytes(g) == 4 * 300  # x is read by the last node, so x, b, c coexist


def test_a_weight_cast_at_build_time_is_not_an_activation() -> None:
    """An fp16 weight cast to fp32 and transposed (as exporters write it): constants alone, folded at build
    time, so only x and y are activations (the fp32 copy was counted: 365 MB for a 7B-shaped block)."""
    x = Value("x", TensorType((1, 64), F32))
    w16 = Value.const("w", np.ones((32, 64), np.float16))
    w32 = Value("w32", TensorType((32, 64), F32))
    wt = Value("wt", TensorType((64, 32), F32))
    y = Value("y", TensorType((1, 32), F32))
    g = Graph("g", [x], [y], [Node(Op.CAST, [w16], [w32], {"to": F32}),
                              Node(Op.TRANSPOSE, [w32], [wt], {"perm": (1, 0)}), Node(Op.MATMUL, [x, wt], [y])])
    assert peak_activation_bytes(g) == 4 * (64 + 32)


def test_weight_bytes_by_format_after_lowering() -> None:
    from test_lower_format_layers import layer_model

    from hwsim.frontend import import_model

    model, _ = layer_model("LoRDBA")
    g = import_model(model)
    run_pipeline(g, DEFAULT_PIPELINE)
    report = memory_report(g)
    packed = sum(int(np.prod(t.dims)) * (1 if t.data_type == 2 else 2) for t in model.graph.initializer)
    assert report.weight_bytes_by_format == {"LoRDBA": packed}
    assert report.weight_bytes == packed
