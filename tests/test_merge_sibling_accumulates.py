"""The CPU pass that merges accumulate ops of equal width reading the same activations: which it merges, which
it leaves, unchanged semantics in the interpreter and in a host build, and that CPU builds run it on a clone."""

import numpy as np
import tvm
from tvm import relax

from codegen import host
from codegen.relax_lower import to_relax
from hwsim import interp
from hwsim.api import _for_target
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value, verify
from hwsim.passes import merge_sibling_accumulates
from models.formats.packing import pack_i2, pack_signs
from targets import load_target

F32 = DType.FLOAT32
RNG = np.random.default_rng(11)
M, K = 2, 64


def acc(name: str, x: Value, n: int, op: Op = Op.TERNARY_ACCUMULATE, scalar_post: bool = False,
        pre: bool = False) -> tuple[Node, Value]:
    k = x.type.shape[-1]
    packed = Value.const(f"{name}_w", pack_i2(RNG.integers(-1, 2, (n, k))) if op is Op.TERNARY_ACCUMULATE
                         else pack_signs(RNG.choice([-1, 1], (n, k))))
    post = Value.const(f"{name}_s", (RNG.random(()) if scalar_post else RNG.random(n)).astype(np.float16))
    scales = [Value.const(f"{name}_pre", RNG.random(k).astype(np.float16))] if pre else []
    y = Value(name, TensorType((*x.type.shape[:-1], n), F32))
    return Node(op, [x, packed, *scales, post], [y], {"k": k, "pre": int(pre), "post": 1}, name=name), y


def mlp_graph() -> Graph:
    """gate and up (equal width, one with a scalar scale) and a narrower third reading x; a pre-scaled pair."""
    x = Value("x", TensorType((1, M, K), F32))
    (g, gy), (u, uy), (o, oy) = acc("gate", x, 48, scalar_post=True), acc("up", x, 48), acc("other", x, 32)
    (p1, p1y), (p2, p2y) = acc("pre1", x, 32, Op.SIGN_ACCUMULATE, pre=True), acc("pre2", x, 32, Op.SIGN_ACCUMULATE,
                                                                                 pre=True)
    prod = Value("prod", TensorType((1, M, 48), F32))
    return Graph("g", [x], [prod, oy, p1y, p2y], [g, o, p1, u, p2, Node(Op.MUL, [gy, uy], [prod])])


def test_equal_width_siblings_merge_into_one_accumulate_and_slices() -> None:
    graph = mlp_graph()
    feeds = {"x": RNG.standard_normal((1, M, K)).astype(np.float32)}
    before = interp.run(graph, feeds)
    assert merge_sibling_accumulates(graph)
    verify(graph)
    merged = [n for n in graph.nodes if n.op is Op.TERNARY_ACCUMULATE and n.outputs[0].type.shape[-1] == 96]
    assert len(merged) == 1 and merged[0].name == "gate+up"
    slices = [n for n in graph.nodes if n.op is Op.SLICE]
    assert [(s.outputs[0].name, s.attrs["starts"], s.attrs["ends"], s.attrs["axes"]) for s in slices] == [
        ("gate", [0], [48], [2]), ("up", [48], [96], [2])]
    assert all(s.inputs[0] is merged[0].outputs[0] for s in slices)
    # the narrower one and the pre-scaled ones (a pre-scale is per member) stay as they were
    assert {n.name for n in graph.nodes if n.op in (Op.TERNARY_ACCUMULATE, Op.SIGN_ACCUMULATE)} == {
        "gate+up", "other", "pre1", "pre2"}
    for got, want in zip(interp.run(graph, feeds), before, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    assert not merge_sibling_accumulates(graph)


def test_graph_outputs_and_fused_addends_are_not_merged() -> None:
    x = Value("x", TensorType((M, K), F32))
    (a, ay), (b, by) = acc("a", x, 32), acc("b", x, 32)
    assert not merge_sibling_accumulates(Graph("g", [x], [ay, by], [a, b]))
    (c, cy), (d, dy) = acc("c", x, 32), acc("d", x, 32)
    d.inputs.append(cy)
    d.attrs["add"] = 1
    out = Value("out", TensorType((M, 32), F32))
    assert not merge_sibling_accumulates(Graph("g", [x], [out], [c, d, Node(Op.RELU, [dy], [out])]))


def test_cpu_build_merges_on_a_clone_and_matches_the_interpreter() -> None:
    graph = mlp_graph()
    nodes = list(graph.nodes)
    lowered = _for_target(graph, load_target("host"))
    assert graph.nodes == nodes and all(n.op is not Op.SLICE for n in graph.nodes)  # the original is untouched
    assert sum(n.op is Op.SLICE for n in lowered.nodes) == 2
    assert _for_target(graph, load_target("sacc-32x32")) is graph
    target = host.tvm_target(load_target("host"))
    vm = relax.VirtualMachine(host.build(to_relax(lowered, target), target), tvm.cpu())
    feeds = {"x": RNG.standard_normal((1, M, K)).astype(np.float32)}
    for got, want in zip(host.run(vm, [feeds["x"]]), interp.run(graph, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
