"""The pass that multiplies grouped queries by the un-repeated KV heads: the exporter's repeat_kv pattern
(reshape, broadcast, reshape, transpose, scale) as torch writes it, the same result in the interpreter and in a
TVM build (whose scores read the keys untransposed), the broadcast gone; and the patterns it must leave alone."""

import numpy as np
import tvm
from tvm import relax

from codegen import host
from codegen.relax_lower import to_relax
from hwsim import interp
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value, infer, verify
from hwsim.passes import eliminate_dead_code, grouped_query_matmul
from targets import load_target

F32 = DType.FLOAT32


class Builder:
    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def __call__(self, op: Op, inputs: list[Value], **attrs) -> Value:
        out = Value(f"v{len(self.nodes)}", infer(op, [v.type for v in inputs], attrs)[0])
        self.nodes.append(Node(op, inputs, [out], attrs))
        return out


def attention(kv: int = 3, groups: int = 3, s: int = 2, t: int = 5, d: int = 16) -> Graph:
    """softmax(q k^T * c) v with k and v repeated from kv to kv * groups heads, as the torch exporter writes it."""
    h, b = kv * groups, Builder()
    q = Value("q", TensorType((1, h, s, d), F32))
    k = Value("k", TensorType((1, kv, t, d), F32))
    v = Value("v", TensorType((1, kv, t, d), F32))
    scale = Value.const("c", np.array(0.35, np.float32))

    def repeat_kv(x: Value) -> Value:
        x = b(Op.RESHAPE, [x], shape=(1, kv, 1, t, d))
        x = b(Op.BROADCAST_TO, [x], shape=(1, kv, groups, t, d))
        return b(Op.RESHAPE, [x], shape=(1, h, t, d))

    kt = b(Op.RESHAPE, [repeat_kv(k)], shape=(h, t, d))
    kt = b(Op.RESHAPE, [b(Op.TRANSPOSE, [kt], perm=(0, 2, 1))], shape=(1, h, d, t))
    scores = b(Op.MATMUL, [b(Op.MUL, [q, scale]), b(Op.MUL, [kt, scale])])
    out = b(Op.MATMUL, [b(Op.SOFTMAX, [scores], axis=3), repeat_kv(v)])
    return Graph("gqa", [q, k, v], [out], b.nodes)


def feeds(g: Graph) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    return {v.name: rng.standard_normal(v.type.shape).astype(np.float32) for v in g.inputs}


def test_gqa_matmuls_read_the_unrepeated_heads() -> None:
    g = attention()
    xs = feeds(g)
    before = interp.run(g, xs)[0]
    assert grouped_query_matmul(g)
    eliminate_dead_code(g)
    verify(g)
    assert Op.BROADCAST_TO not in {n.op for n in g.nodes}
    mms = [n for n in g.nodes if n.op is Op.MATMUL]
    assert [n.inputs[0].type.shape for n in mms] == [(1, 3, 6, 16), (1, 3, 6, 5)]  # 3 heads x 2 rows per KV head
    np.testing.assert_allclose(interp.run(g, xs)[0], before, rtol=1e-6, atol=1e-6)
    assert not grouped_query_matmul(g)
    mod = to_relax(g, host.tvm_target(load_target("host")))
    # the scores read the keys untransposed (codegen/kernels/dot.py): no transpose of the cache is emitted
    assert any(gv.name_hint.startswith("dot_3x6x5x16") for gv in mod.functions) and "permute_dims" not in mod.script()
    vm = relax.VirtualMachine(host.build(mod, host.tvm_target(load_target("host"))), tvm.cpu())
    np.testing.assert_allclose(host.run(vm, [xs[v.name] for v in g.inputs])[0], before, rtol=1e-5, atol=1e-5)


def test_a_broadcast_that_repeats_nothing_is_left_alone() -> None:
    """As many KV heads as query heads: the broadcast repeats nothing, there is nothing to regroup."""
    assert not grouped_query_matmul(attention(kv=3, groups=1))


def test_a_broadcast_of_the_matrix_dims_is_left_alone() -> None:
    """Broadcasting rows of the matrix (not heads) is not a KV repeat."""
    b = Builder()
    q = Value("q", TensorType((1, 2, 4, 8), F32))
    k = Value("k", TensorType((1, 2, 1, 8), F32))
    kb = b(Op.BROADCAST_TO, [k], shape=(1, 2, 8, 8))
    b(Op.MATMUL, [q, kb])
    g = Graph("g", [q, k], [b.nodes[-1].outputs[0]], b.nodes)
    assert not grouped_query_matmul(g)
