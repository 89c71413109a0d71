"""The pass that moves the keys' scale to the queries and the keys' transpose out of its reshapes: the
exporter's scaled-dot-product pattern (a scale on each side, the transpose wrapped in head-dim reshapes), the same
result in the interpreter and a TVM build whose scores read the keys untransposed; what it must leave alone."""

import numpy as np
import tvm
from tvm import relax

from codegen import host
from codegen.relax_lower import to_relax
from hwsim import interp
from hwsim.ir import Graph, Op, TensorType, Value, verify
from hwsim.passes import eliminate_dead_code, scale_to_queries
from targets import load_target
from tests.test_grouped_query_matmul import F32, Builder, feeds


def scores(heads: int = 4, s: int = 1, t: int = 129, d: int = 16, scale_q: bool = True) -> Graph:
    """q k^T with k^T = reshape(transpose(reshape(k))) and d^-1/4 on both sides, as torch's SDPA exports it."""
    b = Builder()
    q = Value("q", TensorType((1, heads, s, d), F32))
    k = Value("k", TensorType((1, heads, t, d), F32))
    c = Value.const("c", np.array(d ** -0.25, np.float32))
    kt = b(Op.RESHAPE, [b(Op.TRANSPOSE, [b(Op.RESHAPE, [k], shape=(heads, t, d))], perm=(0, 2, 1))],
           shape=(1, heads, d, t))
    b(Op.MATMUL, [b(Op.MUL, [q, c]) if scale_q else q, b(Op.MUL, [kt, c])])
    return Graph("scores", [q, k], [b.nodes[-1].outputs[0]], b.nodes)


def test_decode_scores_read_the_keys_untransposed() -> None:
    g = scores()
    xs = feeds(g)
    before = interp.run(g, xs)[0]
    assert scale_to_queries(g)
    eliminate_dead_code(g)
    verify(g)
    mm = next(n for n in g.nodes if n.op is Op.MATMUL)
    kt = mm.inputs[1].producer
    assert kt.op is Op.TRANSPOSE and kt.inputs[0].name == "k" and tuple(kt.attrs["perm"]) == (0, 1, 3, 2)
    assert sum(n.op is Op.MUL for n in g.nodes) == 2 and all(n.outputs[0].type.shape == (1, 4, 1, 16)
                                                              for n in g.nodes if n.op is Op.MUL)
    np.testing.assert_allclose(interp.run(g, xs)[0], before, rtol=1e-5, atol=1e-6)
    assert not scale_to_queries(g)
    target = host.tvm_target(load_target("host"))
    mod = to_relax(g, target)
    assert any(gv.name_hint.startswith("dot_4x1x129x16") for gv in mod.functions) and "permute_dims" not in mod.script()
    vm = relax.VirtualMachine(host.build(mod, target), tvm.cpu())
    np.testing.assert_allclose(host.run(vm, [xs[v.name] for v in g.inputs])[0], before, rtol=1e-5, atol=1e-5)


def test_what_it_leaves_alone() -> None:
    # queries larger than the keys: the scale stays where it is cheaper
    assert not scale_to_queries(scores(s=64, t=8))
    # a plain transpose, no scale: already what the backends read
    b = Builder()
    q, k = Value("q", TensorType((1, 2, 1, 8), F32)), Value("k", TensorType((1, 2, 5, 8), F32))
    b(Op.MATMUL, [q, b(Op.TRANSPOSE, [k], perm=(0, 1, 3, 2))])
    assert not scale_to_queries(Graph("g", [q, k], [b.nodes[-1].outputs[0]], b.nodes))


def test_a_scale_on_the_keys_alone_moves_too() -> None:
    g = scores(scale_q=False)
    xs = feeds(g)
    before = interp.run(g, xs)[0]
    assert scale_to_queries(g)
    eliminate_dead_code(g)
    np.testing.assert_allclose(interp.run(g, xs)[0], before, rtol=1e-5, atol=1e-6)
