"""The IR core: verifier, topological order, printer, pass pipeline."""

import numpy as np
import pytest

from hwsim.errors import IRError
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value, print_graph, verify
from hwsim.passes import Pass, eliminate_dead_code, run_pipeline

F32 = DType.FLOAT32


def small_graph() -> tuple[Graph, Node, Node]:
    x = Value("x", TensorType((2, 4), F32))
    w = Value.const("w", np.ones((4, 3), np.float32))
    h = Value("h", TensorType((2, 3), F32))
    y = Value("y", TensorType((2, 3), F32))
    mm = Node(Op.MATMUL, [x, w], [h], name="mm")
    relu = Node(Op.RELU, [h], [y], name="relu")
    return Graph("g", [x], [y], [mm, relu]), mm, relu


def test_valid_graph_verifies() -> None:
    g, _, _ = small_graph()
    verify(g)


def test_verifier_catches_wrong_output_type() -> None:
    g, mm, _ = small_graph()
    mm.outputs[0].type = TensorType((2, 4), F32)
    with pytest.raises(IRError, match=r"node 'mm' \(MATMUL\): outputs typed"):
        verify(g)


def test_verifier_catches_arity_and_attributes() -> None:
    g, mm, relu = small_graph()
    relu.attrs["axis"] = 1
    with pytest.raises(IRError, match="attributes"):
        verify(g)
    relu.attrs.clear()
    mm.inputs.append(mm.inputs[0])
    with pytest.raises(IRError, match=r"3 inputs, expected 2\.\.2"):
        verify(g)


def test_verifier_catches_use_before_definition_and_toposort_fixes_it() -> None:
    g, mm, relu = small_graph()
    g.nodes = [relu, mm]
    with pytest.raises(IRError, match="used before it is defined"):
        verify(g)
    g.toposort()
    assert g.nodes == [mm, relu]
    verify(g)


def test_verifier_catches_incompatible_matmul() -> None:
    x = Value("x", TensorType((2, 5), F32))
    w = Value.const("w", np.ones((4, 3), np.float32))
    y = Value("y", TensorType((2, 3), F32))
    with pytest.raises(IRError, match="MATMUL inner dims differ"):
        verify(Graph("g", [x], [y], [Node(Op.MATMUL, [x, w], [y], name="mm")]))


def test_printer_is_deterministic_and_shows_types() -> None:
    a, b = print_graph(small_graph()[0]), print_graph(small_graph()[0])
    assert a == b
    assert "%h: float32[2,3] = MATMUL(%x, %w)" in a
    assert "const %w: float32[4,3]  # 48 B sha256:" in a


def test_pipeline_reports_changes_and_names_the_breaking_pass() -> None:
    g, _, _ = small_graph()
    dead = Value("dead", TensorType((2, 4), F32))
    g.nodes.append(Node(Op.NEG, [g.inputs[0]], [dead], name="unused"))
    assert run_pipeline(g, [Pass("dce", eliminate_dead_code)]) == ["dce"]
    assert run_pipeline(g, [Pass("dce", eliminate_dead_code)]) == []

    def corrupt(graph: Graph) -> bool:
        graph.nodes[0].outputs[0].type = TensorType((9,), F32)
        return True

    with pytest.raises(IRError, match="after pass 'corrupt' \\(passes before it: dce\\)"):
        run_pipeline(g, [Pass("dce", eliminate_dead_code), Pass("corrupt", corrupt)])
