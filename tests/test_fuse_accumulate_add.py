"""The pass that folds `ADD(other, accumulate(...))` into the accumulate op as its addend: before/expected
graphs, the cases it must leave alone, and unchanged semantics in the interpreter and the TVM build."""

import numpy as np
import pytest
import tvm
from tvm import relax

from codegen import host
from codegen.relax_lower import to_relax
from hwsim import interp
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value, verify
from hwsim.passes import fuse_accumulate_add
from models.formats.packing import pack_signs
from targets import load_target

F32, F16 = DType.FLOAT32, DType.FLOAT16
RNG = np.random.default_rng(5)
M, N, K = 4, 64, 128


def acc(name: str, x: Value, n: int = N, dtype: DType = F32) -> tuple[Node, Value]:
    packed = Value.const(f"{name}_w", pack_signs(RNG.choice([-1, 1], (n, x.type.shape[-1]))))
    post = Value.const(f"{name}_s", RNG.random(n).astype(np.float16))
    y = Value(name, TensorType((*x.type.shape[:-1], n), dtype))
    return Node(Op.SIGN_ACCUMULATE, [x, packed, post], [y], {"k": x.type.shape[-1], "pre": 0, "post": 1}), y


def lora_graph(dtype: DType = F32) -> Graph:
    """out = relu(x W + acc(acc(x))): a base layer plus a low-bit branch."""
    x = Value("x", TensorType((M, K), dtype))
    base = Value("base", TensorType((M, N), dtype))
    mm = Node(Op.MATMUL, [x, Value.const("W", RNG.standard_normal((K, N)).astype(dtype.numpy))], [base])
    down, h = acc("h", x, 8, dtype)
    up, y = acc("y", h, N, dtype)
    s, out = Value("sum", TensorType((M, N), dtype)), Value("out", TensorType((M, N), dtype))
    return Graph("g", [x], [out], [mm, down, up, Node(Op.ADD, [base, y], [s]), Node(Op.RELU, [s], [out])])


def feeds(g: Graph) -> dict[str, np.ndarray]:
    return {v.name: RNG.standard_normal(v.type.shape).astype(v.type.dtype.numpy) for v in g.inputs}


def test_branch_add_folds_into_the_last_accumulate() -> None:
    g = lora_graph()
    xs = feeds(g)
    before = interp.run(g, xs)[0]
    assert fuse_accumulate_add(g)
    verify(g)
    assert [n.op for n in g.nodes] == [Op.MATMUL, Op.SIGN_ACCUMULATE, Op.SIGN_ACCUMULATE, Op.RELU]
    up = g.nodes[2]
    assert up.attrs == {"k": 8, "pre": 0, "post": 1, "add": 1} and up.inputs[-1].name == "base"
    assert up.outputs[0].name == "sum" and up.outputs[0].producer is up
    np.testing.assert_allclose(interp.run(g, xs)[0], before, rtol=1e-6, atol=1e-6)
    assert not fuse_accumulate_add(g)  # nothing left to fuse


def test_sum_of_two_accumulates_folds_into_the_later_one() -> None:
    """A trit-plane style y1 + y2: the second accumulate adds the first's output; order stays valid."""
    x = Value("x", TensorType((M, K), F32))
    (n1, y1), (n2, y2) = acc("y1", x), acc("y2", x)
    out = Value("out", TensorType((M, N), F32))
    g = Graph("g", [x], [out], [n1, n2, Node(Op.ADD, [y1, y2], [out])])
    xs = feeds(g)
    before = interp.run(g, xs)[0]
    assert fuse_accumulate_add(g)
    assert g.nodes == [n1, n2] and n2.inputs[-1] is y1 and n2.outputs == [out]
    np.testing.assert_allclose(interp.run(g, xs)[0], before, rtol=1e-6, atol=1e-6)


def test_addend_defined_after_the_accumulate_is_reordered() -> None:
    x = Value("x", TensorType((M, K), F32))
    n1, y1 = acc("y1", x)
    late = Value("late", TensorType((M, N), F32))
    mm = Node(Op.MATMUL, [x, Value.const("W", RNG.standard_normal((K, N)).astype(np.float32))], [late])
    out = Value("out", TensorType((M, N), F32))
    g = Graph("g", [x], [out], [n1, mm, Node(Op.ADD, [y1, late], [out])])
    assert fuse_accumulate_add(g)
    verify(g)  # the accumulate now reads `late`, so it moved after the matmul
    assert g.nodes == [mm, n1]


@pytest.mark.parametrize("case", ["used twice", "graph output", "broadcast", "float16"])
def test_leaves_what_it_cannot_fuse_exactly(case: str) -> None:
    if case == "float16":
        g = lora_graph(F16)
    else:
        g = lora_graph()
        add = next(n for n in g.nodes if n.op is Op.ADD)
        y = add.inputs[1]
        if case == "used twice":
            extra = Value("extra", y.type)
            g.nodes.append(Node(Op.NEG, [y], [extra]))
            g.outputs.append(extra)
        elif case == "graph output":
            g.outputs.append(y)
        else:  # bias [N] + y: the addend would need a broadcast
            add.inputs[0] = Value.const("bias", RNG.standard_normal(N).astype(np.float32))
    ops = [n.op for n in g.nodes]
    assert not fuse_accumulate_add(g)
    assert [n.op for n in g.nodes] == ops


def test_fused_graph_builds_and_matches_the_interpreter() -> None:
    g = lora_graph()
    fuse_accumulate_add(g)
    target = host.tvm_target(load_target("host"))
    mod = to_relax(g, target)
    assert any(gv.name_hint.endswith(f"_post_add_{M}x{N}x8") for gv in mod.functions)
    xs = feeds(g)
    got = host.run(relax.VirtualMachine(host.build(mod, target), tvm.cpu()), [xs["x"]])[0]
    want = interp.run(g, xs)[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
