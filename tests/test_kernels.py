"""The accumulate kernels and the dense GEMM / elementwise schedules against numpy, and the choice between
the kernels by shape and target.

The NEON variants run under qemu in the cortex-a76 builds of tests/test_variants.py.
"""

import numpy as np
import pytest
import tvm
from tvm import relax

from codegen import host
from codegen.kernels import LUT_MIN_DEPTH, LUT_MIN_ROWS, UNPACK_MIN_TOKENS, Fused, choose_accumulate, shuffle_isas
from codegen.kernels.accumulate import accumulate_kernel
from codegen.kernels.lut import lut_kernel, lut_layout
from codegen.kernels.lut_vnni import vnni_kernel, vnni_layout
from codegen.kernels.unpack import unpack_kernel
from codegen.relax_lower import to_relax
from codegen.schedules.cpu import Elementwise, Matmul
from hwsim import interp
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value
from models.formats.packing import pack_i2, pack_signs
from targets import load_target

HOST = host.tvm_target(load_target("host"))
A76 = host.tvm_target(load_target("cortex-a76"))


def weights(bits: int, n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.choice([-1, 1], (n, k)) if bits == 1 else rng.integers(-1, 2, (n, k))


def run_kernel(func, x: np.ndarray, w: np.ndarray, n: int) -> np.ndarray:
    lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=HOST)
    args = [tvm.runtime.tensor(a) for a in (x, w, np.zeros((x.shape[0], n), np.float32))]
    lib["k"](*args)
    return args[2].numpy()


@pytest.mark.parametrize("isa", ["avx2", "ssse3"])
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("m, n, k", [(1, 64, 256), (3, 32, 520), (2, 96, 8)])
def test_lut_kernel_matches_numpy(isa: str, bits: int, m: int, n: int, k: int) -> None:
    if isa not in shuffle_isas(HOST):
        pytest.fail(f"this CPU lacks {isa}; the LUT kernel's x86 paths cannot be checked here")
    w = weights(bits, n, k)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    got = run_kernel(lut_kernel(m, n, k, "k", isa, planes=bits), x, lut_layout(w, isa, bits), n)
    ref = x @ w.T.astype(np.float32)
    # 24-bit tables: as exact as fp32 summation in another order (int16 tables were 3e-5 per matmul, which 30
    # layers of a ternary base compound past the verifier's 1e-3: smollm2-135m decode)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("m, n, k", [(1, 64, 256), (3, 32, 544), (2, 48, 32), (1, 576, 576)])
def test_vnni_lut_kernel_matches_numpy(bits: int, m: int, n: int, k: int, threads: int) -> None:
    """threads=3 leaves the last decode thread without a task at N=64 (4 tasks, 2 a thread)."""
    if "avx512vnni" not in shuffle_isas(HOST):
        pytest.skip("this CPU lacks AVX-512 VBMI + VNNI: the vpermb/vpdpbusd LUT kernel cannot run here")
    w = weights(bits, n, k)
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    got = run_kernel(vnni_kernel(m, n, k, "k", planes=bits, threads=threads), x,
                     vnni_layout(w, bits, threads=threads), n)
    ref = x @ w.T.astype(np.float32)
    assert np.abs(got - ref).max() <= 1e-6 * np.abs(ref).max()  # the same 24-bit tables as the AVX2 kernel


@pytest.mark.parametrize("n, threads, tasks", [(576, 2, 18), (576, 1, 9), (3072, 2, 12), (192, 2, 12)])
def test_vnni_tasks_split_evenly_over_the_threads(n: int, threads: int, tasks: int) -> None:
    """36 row blocks on 2 threads: 18 tasks of 2 blocks (9 of 4 would give one thread 5, the other 4)."""
    from codegen.kernels.lut_vnni import ROWS, _plan

    assert n // ROWS // _plan(n, 576, threads)[1] == tasks


def test_vnni_layout_puts_row_and_group_in_byte_lanes() -> None:
    """Byte 4r + j of pair qp: row r's sign nibble of group 4(2qp) + j low, of group 4(2qp + 1) + j high."""
    w = -np.ones((16, 32), np.int64)
    w[5, 4 * 6 + 2] = 1  # row 5, group 6 = quad 1 (the high nibble), j = 2, weight bit 2
    out = vnni_layout(w, 1)
    assert out.shape == (1, 1, 1, 1, 1, 64) and np.flatnonzero(out).tolist() == [4 * 5 + 2]
    assert out.ravel()[22] == 4 << 4


def test_paired_trit_layout_puts_both_planes_of_a_row_in_adjacent_lanes() -> None:
    """AVX2 trits: byte lanes 2j, 2j+1 of block ob hold row 16 ob + j's planes a (t >= 0) and b (t > 0)."""
    w = np.zeros((32, 8), np.int64)
    w[17, 5], w[3, 2] = 1, -1
    out = lut_layout(w, "avx2", 2)
    assert out.shape == (2, 1, 32)
    want = np.zeros((2, 32), np.uint8)
    want[:, 0::2] = 0xFF  # zeros: plane a set, plane b clear
    want[1, 2:4] = 0xFF, 1 << 5  # row 17 = block 1, j = 1: weight 5 is +1
    want[0, 6] = 0xFF & ~(1 << 2)  # row 3 = block 0, j = 3: weight 2 is -1
    np.testing.assert_array_equal(out[:, 0], want)


def test_lut_kernel_is_exact_on_zero_input() -> None:
    w = weights(1, 32, 64)
    got = run_kernel(lut_kernel(1, 32, 64, "k", "avx2"), np.zeros((1, 64), np.float32), lut_layout(w, "avx2", 1), 32)
    assert not got.any()


@pytest.mark.parametrize("bits", [1, 2])
def test_select_kernel_matches_numpy(bits: int) -> None:
    w = weights(bits, 12, 64)
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    packed = pack_signs(w) if bits == 1 else pack_i2(w)
    got = run_kernel(accumulate_kernel(2, 12, 64, "k", bits), x, packed, 12)
    np.testing.assert_allclose(got, x @ w.T.astype(np.float32), rtol=1e-5, atol=1e-5)


EXTRAS = [Fused(True, True, True), Fused(pre=True), Fused(post=True), Fused(add=True), Fused(post=True, add=True)]


@pytest.mark.parametrize("fused", EXTRAS, ids=lambda f: f.suffix[1:])
@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("m, n, k, algorithm", [(1, 64, 256, "lut"), (16, 64, 512, "lut"), (2, 12, 64, "select"),
                                                (9, 40, 24, "unpack"), (32, 16, 512, "unpack")])
def test_kernels_fuse_scales_and_addend(fused: Fused, bits: int, m: int, n: int, k: int, algorithm: str) -> None:
    """y = post * (W (pre * x)) + add inside each kernel, with its signature holding just the extras it uses."""
    rng = np.random.default_rng(m + n)
    w = weights(bits, n, k, seed=k)
    packed = pack_signs(w) if bits == 1 else pack_i2(w)
    kernel = choose_accumulate(bits, m, n, k, HOST, packed, fused)
    assert kernel.algorithm == algorithm and kernel.fused == fused and fused.suffix in kernel.name
    x = rng.standard_normal((m, k)).astype(np.float32)
    pre, post, add = rng.random(k, np.float32), rng.random(n, np.float32), rng.standard_normal((m, n), np.float32)
    extras = [a for on, a in ((fused.pre, pre), (fused.post, post), (fused.add, add)) if on]
    assert len(kernel.func.params) == 3 + len(extras)
    lib = tvm.tirx.build(tvm.IRModule({"k": kernel.func.with_attr("global_symbol", "k")}), target=HOST)
    args = [tvm.runtime.tensor(a) for a in (x, kernel.relayout(packed) if kernel.relayout else packed, *extras,
                                             np.zeros((m, n), np.float32))]
    lib["k"](*args)
    want = ((x * pre if fused.pre else x) @ w.T.astype(np.float32)) * (post if fused.post else 1) + (
        add if fused.add else 0)
    tol = 1e-6 if algorithm == "lut" else 1e-5  # 24-bit tables vs exact fp32 adds
    assert np.abs(args[-1].numpy() - want).max() <= tol * np.abs(want).max()


def test_dispatch_by_shape_and_target() -> None:
    packed = pack_signs(weights(1, 64, 64))
    assert choose_accumulate(1, 1, 64, 64, HOST, packed).algorithm == "lut"
    assert "_lut_neon_" in choose_accumulate(1, 1, 64, 64, A76, packed).name
    assert choose_accumulate(1, 1, 64, 64, HOST, None).algorithm == "select"  # weights not constant
    small = pack_signs(weights(1, LUT_MIN_ROWS // 2, 64))
    assert choose_accumulate(1, 1, LUT_MIN_ROWS // 2, 64, HOST, small).algorithm == "select"  # tables dominate
    generic = tvm.target.Target({"kind": "llvm", "mcpu": "x86-64"})  # SSE2 only: no byte shuffle
    assert choose_accumulate(1, 1, 64, 64, generic, packed).algorithm == "select"
    # N = 48: not whole AVX2 registers; K = 72 not whole vpermb quad pairs: the SSSE3 kernel
    assert "_lut_ssse3_" in choose_accumulate(1, 1, 48, 72, HOST, pack_signs(weights(1, 48, 72))).name
    if "avx512vnni" in shuffle_isas(HOST):
        assert "_lut_avx512vnni_" in choose_accumulate(1, 1, 48, 64, HOST, pack_signs(weights(1, 48, 64))).name


def test_dispatch_at_prefill() -> None:
    """Many activation rows: the decode of unpack amortises; the LUT keeps deep sign layers."""
    m, deep = 4 * UNPACK_MIN_TOKENS, LUT_MIN_DEPTH
    lora_down = pack_signs(weights(1, 16, deep))
    assert choose_accumulate(1, m, 16, deep, HOST, lora_down).algorithm == "unpack"
    assert choose_accumulate(1, m, 64, 16, HOST, pack_signs(weights(1, 64, 16))).algorithm == "unpack"  # shallow
    assert choose_accumulate(1, m, 64, deep, HOST, pack_signs(weights(1, 64, deep))).algorithm == "lut"
    assert choose_accumulate(2, m, 64, deep, HOST, pack_i2(weights(2, 64, deep))).algorithm == "unpack"  # 2 planes
    assert choose_accumulate(1, m, 16, deep, A76, lora_down).algorithm == "unpack"
    assert choose_accumulate(1, UNPACK_MIN_TOKENS - 1, 16, deep, HOST, lora_down).algorithm == "select"


@pytest.mark.parametrize("bits", [1, 2])
@pytest.mark.parametrize("m, n, k", [(16, 16, 512), (9, 40, 24), (32, 64, 16)])
def test_unpack_kernel_matches_numpy(bits: int, m: int, n: int, k: int) -> None:
    """Row counts that leave a remainder tile, N below one vector panel, K below one K-panel."""
    w = weights(bits, n, k, seed=m)
    x = np.random.default_rng(m).standard_normal((m, k)).astype(np.float32)
    packed = pack_signs(w) if bits == 1 else pack_i2(w)
    got = run_kernel(unpack_kernel(m, n, k, "k", bits, HOST), x, packed, n)
    np.testing.assert_allclose(got, x @ w.T.astype(np.float32), rtol=1e-4, atol=1e-4)


def run_scheduled(func, rule, inputs: list[np.ndarray], out_shape: tuple[int, ...]) -> np.ndarray:
    sch = rule.apply(func, HOST, False)
    assert sch is not None, "the rule declined a function it should schedule"
    lib = tvm.tirx.build(sch.mod, target=HOST)
    args = [tvm.runtime.tensor(a) for a in (*inputs, np.zeros(out_shape, np.float32))]
    lib["main"](*args)
    return args[-1].numpy()


@pytest.mark.parametrize("batch, m, n, k, transposed", [
    ((), 128, 96, 512, False), ((), 3, 16, 40, False), ((), 64, 16, 256, False), ((2, 3), 10, 12, 64, True),
    ((1,), 1, 256, 256, False), ((), 16, 48, 64, False)])
def test_matmul_schedule_matches_numpy(batch: tuple[int, ...], m: int, n: int, k: int, transposed: bool) -> None:
    """Packed B panels, K panels, row chunks when there are few column panels, transposed B (attention),
    batch 1 (a GEMV whose unit row loop normalisation drops) and prefill rows on AVX-512's 16-row tile."""
    from tvm import te

    rng = np.random.default_rng(3)
    a = rng.standard_normal((*batch, m, k)).astype(np.float32)
    b = rng.standard_normal((*batch, n, k) if transposed else (*batch, k, n)).astype(np.float32)
    x, w = te.placeholder(a.shape, "float32"), te.placeholder(b.shape, "float32")
    r = te.reduce_axis((0, k))

    def body(*idx):
        *bi, i, j = idx
        return te.sum(x[(*bi, i, r)] * (w[(*bi, j, r)] if transposed else w[(*bi, r, j)]), axis=r)

    y = te.compute((*batch, m, n), body)
    got = run_scheduled(te.create_prim_func([x, w, y]), Matmul(), [a, b], (*batch, m, n))
    want = a @ (np.swapaxes(b, -1, -2) if transposed else b)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shape", [(128, 4096), (3, 5)])
def test_elementwise_schedule_matches_numpy(shape: tuple[int, ...]) -> None:
    """Scale and residual add as Relax fuses them; sizes with and without whole vectors and threads."""
    from tvm import te

    rng = np.random.default_rng(4)
    a, s, c = (rng.standard_normal(v).astype(np.float32) for v in (shape, shape[-1:], shape))
    x, sc, res = (te.placeholder(v, "float32") for v in (shape, shape[-1:], shape))
    y = te.compute(shape, lambda i, j: x[i, j] * sc[j] + res[i, j])
    got = run_scheduled(te.create_prim_func([x, sc, res, y]), Elementwise(), [a, s, c], shape)
    np.testing.assert_allclose(got, a * s + c, rtol=1e-6, atol=1e-6)  # FMA contraction


@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.FLOAT16])
@pytest.mark.parametrize("op, bits", [(Op.SIGN_ACCUMULATE, 1), (Op.TERNARY_ACCUMULATE, 2)])
def test_accumulate_op_in_a_graph_matches_the_interpreter(dtype: DType, op: Op, bits: int) -> None:
    """fp16 and fp32 activations, fused scales, the LUT kernel chosen for the host: same as the IR's semantics."""
    n, k, m = 64, 128, 4
    rng = np.random.default_rng(2)
    w = weights(bits, n, k)
    packed = Value.const("w", pack_signs(w) if bits == 1 else pack_i2(w))
    pre = Value.const("pre", rng.random(k).astype(np.float16))
    post = Value.const("post", rng.random(n).astype(np.float16))
    x, y = Value("x", TensorType((m, k), dtype)), Value("y", TensorType((m, n), dtype))
    graph = Graph("g", [x], [y], [Node(op, [x, packed, pre, post], [y], {"k": k, "pre": 1, "post": 1})])
    mod = to_relax(graph, HOST)
    assert any("_lut_" in gv.name_hint for gv in mod.functions)
    xs = rng.standard_normal((m, k)).astype(dtype.numpy)
    got = host.run(relax.VirtualMachine(host.build(mod, HOST), tvm.cpu()), [xs])[0]
    want = interp.run(graph, {"x": xs})[0]
    assert got.dtype == want.dtype
    tol = 2e-3 if dtype is DType.FLOAT16 else 1e-4  # fp16 output rounding
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol,
                               atol=tol * np.abs(want.astype(np.float32)).max())


@pytest.mark.parametrize("op, bits", [(Op.SIGN_ACCUMULATE, 1), (Op.TERNARY_ACCUMULATE, 2)])
def test_rank_one_accumulate_with_an_addend_matches_the_interpreter(op: Op, bits: int) -> None:
    """K=1 (the up-projection of a rank-1 adapter) with a post-scale and an addend: the matmul's unit reduction
    normalises to an 'injective' block with an init, into which TVM inlined the epilogue twice."""
    n, k = 64, 1
    rng = np.random.default_rng(3)
    w = weights(bits, n, k)
    packed = Value.const("w", pack_signs(w) if bits == 1 else pack_i2(w))
    post = Value.const("post", rng.random(n).astype(np.float16))
    x, add = Value("x", TensorType((1, 1, k), DType.FLOAT32)), Value("a", TensorType((1, 1, n), DType.FLOAT32))
    y = Value("y", TensorType((1, 1, n), DType.FLOAT32))
    graph = Graph("g", [x, add], [y], [Node(op, [x, packed, post, add], [y], {"k": k, "pre": 0, "post": 1, "add": 1})])
    feeds = {"x": rng.standard_normal((1, 1, k)).astype(np.float32),
             "a": rng.standard_normal((1, 1, n)).astype(np.float32)}
    got = host.run(relax.VirtualMachine(host.build(to_relax(graph, HOST), HOST), tvm.cpu()), list(feeds.values()))[0]
    np.testing.assert_allclose(got, interp.run(graph, feeds)[0], rtol=1e-6, atol=1e-6)


def test_one_token_rms_norm_reduces_once() -> None:
    """RMSNorm of one token: the mean has one row, the scale 4096 elements. dlight's CPU Reduction rule (which
    assumes shared rows) computed the mean under the 4096-wide loop, 4096 times (14 ms per norm at d=4096);
    SharedRows keeps it away and Staged runs the reduction's 4096 iterations once, then the scale."""
    from tvm import te
    from tvm.s_tir import dlight as dl

    from codegen.schedules.reduction import SharedRows, Staged, shared_rows

    d = 4096
    rng = np.random.default_rng(5)
    xs, hs, gs = (rng.standard_normal(s).astype(np.float32) for s in ((1, 1, d), (1, 1, d), (d,)))
    x, h = te.placeholder((1, 1, d), "float32"), te.placeholder((1, 1, d), "float32")
    g = te.placeholder((d,), "float32")
    r = te.reduce_axis((0, d))
    s = te.compute((1, 1, 1), lambda a, b, c: te.sum(x[a, b, r], axis=r), name="sum")
    y = te.compute((1, 1, d), lambda a, b, j: h[a, b, j] / te.sqrt(s[a, b, 0] / d + 1e-6) * g[j], name="scale")
    func = te.create_prim_func([x, h, g, y])
    assert shared_rows(func) is False and SharedRows(dl.cpu.Reduction()).apply(func, HOST, False) is None
    sch = Staged().apply(func, HOST, False)
    loops = sch.get_loops(sch.get_sblock("sum"))
    assert np.prod([int(sch.get(lp).extent) for lp in loops]) == d
    got = run_scheduled(func, Staged(), [xs, hs, gs], (1, 1, d))
    want = hs / np.sqrt(xs.sum() / d + 1e-6) * gs
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [DType.FLOAT32, DType.FLOAT16, "fp16 weights cast up"])
@pytest.mark.parametrize("shape, n, k", [((1, 1, 576), 192, 576), ((1, 256), 1024, 256), ((1, 40), 48, 40),
                                         ((16, 96), 80, 96), ((2, 3, 64), 64, 64)])
def test_matmul_by_constant_weights_runs_on_prepacked_panels(dtype: DType | str, shape: tuple[int, ...], n: int,
                                                             k: int) -> None:
    """Linear layers (constant weights) go through the dense kernel, their weights packed into panels at build
    time; fp16 reads fp16 weights, and an fp16 constant cast up to fp32 (an fp16 base) stays fp16 in memory,
    its cast not emitted. Sizes: a GQA k/v projection, a parallel GEMV, a one-vector panel, prefill rows, a
    batched activation."""
    from codegen.kernels.dense import panel_cols, panel_layout

    rng = np.random.default_rng(6)
    xt = DType.FLOAT32 if dtype == "fp16 weights cast up" else dtype
    wt = DType.FLOAT16 if dtype == "fp16 weights cast up" else dtype
    w = Value.const("w", rng.standard_normal((k, n)).astype(wt.numpy))
    x, y = Value("x", TensorType(shape, xt)), Value("y", TensorType((*shape[:-1], n), xt))
    nodes = [Node(Op.MATMUL, [x, w], [y])]
    if wt is not xt:  # as exported: the [out, in] fp16 weight cast up, then transposed
        w = Value.const("w", np.ascontiguousarray(w.data.T))
        w32, wt32 = Value("w32", TensorType((n, k), xt)), Value("wt32", TensorType((k, n), xt))
        nodes = [Node(Op.CAST, [w], [w32], {"to": xt}), Node(Op.TRANSPOSE, [w32], [wt32], {"perm": (1, 0)}),
                 Node(Op.MATMUL, [x, wt32], [y])]
    graph = Graph("g", [x], [y], nodes)
    mod = to_relax(graph, HOST)
    assert any(gv.name_hint.startswith(f"dense_{xt.value}_{wt.value}") for gv in mod.functions)
    assert "float16" not in mod.script() or wt is DType.FLOAT16
    assert "astype" not in mod.script() and "permute_dims" not in mod.script()
    xs = rng.standard_normal(shape).astype(xt.numpy)
    got = host.run(relax.VirtualMachine(host.build(mod, HOST), tvm.cpu()), [xs])[0]
    want = interp.run(graph, {"x": xs})[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 2e-3 if xt is DType.FLOAT16 else 1e-5
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=tol,
                               atol=tol * np.abs(want.astype(np.float32)).max())
    cols, dense = panel_cols(int(np.prod(shape[:-1])), n, HOST), w.data.T if wt is not xt else w.data
    assert panel_layout(dense, cols)[n // cols - 1, 2, 3] == dense[2, n - cols + 3]


def test_matmul_by_a_runtime_operand_keeps_the_gemm_schedule() -> None:
    x, b = Value("x", TensorType((1, 64), DType.FLOAT32)), Value("b", TensorType((64, 32), DType.FLOAT32))
    y = Value("y", TensorType((1, 32), DType.FLOAT32))
    graph = Graph("g", [x, b], [y], [Node(Op.MATMUL, [x, b], [y])])
    assert not any(gv.name_hint.startswith("dense_") for gv in to_relax(graph, HOST).functions)


def test_a_one_row_gemv_streams_several_panels_per_thread() -> None:
    """Decode: each thread reads 4, 3 or 2 of its panels at once where they divide its share (one stream per
    thread is latency-bound), their fp32 accumulators under TVM's 1 KiB stack limit; prefill rows, and shares
    that none divides, keep the register-tiled GEMM. The kernel's output is then [t, s, q, c], read as [1, N]."""
    from codegen.kernels.dense import dense_kernel, dense_shape, gemv_regions, panel_cols, panel_layout

    assert gemv_regions(1, 768, 32, 2) == 4
    assert gemv_regions(1, 768, 64, 2) == 3  # 4 x 64 accumulators are 1 KiB: a workspace call per step
    assert gemv_regions(1, 18, 32, 2) == 3 and gemv_regions(1, 9, 32, 2) == 1
    assert gemv_regions(16, 768, 32, 2) == 1
    with pytest.raises(ValueError, match="3 panels"):
        dense_kernel(1, 64, 96, "float32", "float32", "k", HOST, regions=2)
    assert dense_shape(16, 64, 96, HOST) == (16, 96)
    rng = np.random.default_rng(3)
    k, n = 64, 32 * 24
    w, x = rng.standard_normal((k, n)).astype(np.float32), rng.standard_normal((1, k)).astype(np.float32)
    for regions in (2, 3, 4):
        func = dense_kernel(1, k, n, "float32", "float32", "k", HOST, regions=regions)
        shape = [int(d) for d in func.params[-1].shape]
        assert tuple(shape) == dense_shape(1, k, n, HOST, regions) and shape[1] == regions and np.prod(shape) == n
        lib = tvm.tirx.build(tvm.IRModule({"k": func}), target=HOST)
        packed = panel_layout(w, panel_cols(1, n, HOST))
        args = [tvm.runtime.tensor(a) for a in (x, packed, np.zeros(shape, np.float32))]
        lib["k"](*args)
        np.testing.assert_allclose(args[-1].numpy().reshape(1, n), x @ w, rtol=1e-5, atol=1e-5)


def test_roofline_reads_an_fp16_base_weight_at_its_stored_size_on_cpus() -> None:
    """The CPU's dense kernel reads an fp16 weight cast up to fp32 as fp16 (2 bytes); a GPU build reads the
    folded fp32 constant (4)."""
    from hwsim import roofline

    k, n = 256, 512
    w = Value.const("w", np.ones((n, k), np.float16))
    w32, wt = Value("w32", TensorType((n, k), DType.FLOAT32)), Value("wt", TensorType((k, n), DType.FLOAT32))
    x, y = Value("x", TensorType((1, k), DType.FLOAT32)), Value("y", TensorType((1, n), DType.FLOAT32))
    graph = Graph("g", [x], [y], [Node(Op.CAST, [w], [w32], {"to": DType.FLOAT32}),
                                  Node(Op.TRANSPOSE, [w32], [wt], {"perm": (1, 0)}), Node(Op.MATMUL, [x, wt], [y])])
    activations = 4 * (k + n)
    assert roofline.estimate(graph, load_target("host"))["bytes"] == 2 * k * n + activations
    assert roofline.estimate(graph, load_target("nvidia-h100"))["bytes"] == 4 * k * n + activations


def test_a_weight_transform_read_elsewhere_is_still_emitted() -> None:
    """The prepacked matmul reads the constant itself; the transposed weight that another op also reads (here
    an output) must still be computed."""
    k, n = 64, 32
    w = Value.const("w", np.arange(k * n, dtype=np.float32).reshape(n, k) / (k * n))
    wt = Value("wt", TensorType((k, n), DType.FLOAT32))
    x, y = Value("x", TensorType((1, k), DType.FLOAT32)), Value("y", TensorType((1, n), DType.FLOAT32))
    graph = Graph("g", [x], [y, wt], [Node(Op.TRANSPOSE, [w], [wt], {"perm": (1, 0)}), Node(Op.MATMUL, [x, wt], [y])])
    mod = to_relax(graph, HOST)
    assert any(gv.name_hint.startswith("dense_") for gv in mod.functions)
    xs = np.random.default_rng(7).standard_normal((1, k)).astype(np.float32)
    got = host.run(relax.VirtualMachine(host.build(mod, HOST), tvm.cpu()), [xs])
    want = interp.run(graph, {"x": xs})
    for g, e in zip(got, want, strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", [Op.SIGMOID, Op.EXP, Op.TANH, Op.ERF, Op.SOFTMAX])
def test_transcendentals_run_as_fast_polynomials_within_fp32_error(op: Op) -> None:
    """The CPU pipeline's FastMath pass: exp-based ops (SiLU's sigmoid, softmax) and tanh/erf as TVM's vectorisable
    fast_* forms, not one libm call per element; as accurate as fp32 over the range activations take."""
    x, y = Value("x", TensorType((16, 96), DType.FLOAT32)), Value("y", TensorType((16, 96), DType.FLOAT32))
    graph = Graph("g", [x], [y], [Node(op, [x], [y], {"axis": 1} if op is Op.SOFTMAX else {})])
    mod = to_relax(graph, HOST)
    assert "fast_" in host.FastMath()(mod).script()
    xs = (np.random.default_rng(2).standard_normal((16, 96)) * 4).astype(np.float32)
    got = host.run(relax.VirtualMachine(host.build(mod, HOST), tvm.cpu()), [xs])[0]
    want = interp.run(graph, {"x": xs})[0]
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-6 * np.abs(want).max())


def test_squares_are_multiplies() -> None:
    """x.pow(2) (RMSNorm) lowers to x * x; another exponent stays a power."""
    x = Value("x", TensorType((4, 8), DType.FLOAT32))
    for e, want in ((2.0, "multiply"), (3.0, "power")):
        y = Value("y", x.type)
        g = Graph("g", [x], [y], [Node(Op.POW, [x, Value.const("e", np.array(e, np.float32))], [y])])
        assert f"R.{want}" in to_relax(g, HOST).script()


@pytest.mark.parametrize("batch, m, n, k", [(3, 3, 129, 64), (1, 1, 5, 16), (2, 8, 33, 32)])
def test_dot_kernel_matches_numpy(batch: int, m: int, n: int, k: int) -> None:
    """A @ B^T with B read untransposed (decode attention scores over past + 1 tokens)."""
    from codegen.kernels.dot import dot_kernel
    from codegen.schedules.cpu import register_tile

    lanes = register_tile(HOST)[1]
    if k % lanes:
        pytest.skip(f"K={k} is not whole {lanes}-lane vectors on this CPU")
    rng = np.random.default_rng(4)
    a, x = rng.standard_normal((batch, m, k)).astype(np.float32), rng.standard_normal((batch, n, k)).astype(np.float32)
    lib = tvm.tirx.build(tvm.IRModule({"k": dot_kernel(batch, m, n, k, lanes, "k")}), target=HOST)
    args = [tvm.runtime.tensor(v) for v in (a, x, np.zeros((batch, m, n), np.float32))]
    lib["k"](*args)
    np.testing.assert_allclose(args[-1].numpy(), a @ np.swapaxes(x, 1, 2), rtol=1e-5, atol=1e-5)


def test_small_scratch_buffers_live_on_the_stack() -> None:
    """A decode GEMV's register tile, the dot kernel's accumulators and the LUT kernels' per-group scratch are
    stack buffers: TVM turns any local-scope (or >= 1 KiB) allocation into a TVMBackendAllocWorkspace call and a
    free, per tile inside parallel loops (a 16x576x576 GEMM ran 2x slower so)."""
    from codegen.kernels.dense import dense_kernel
    from codegen.kernels.dot import dot_kernel
    from codegen.schedules.cpu import register_tile

    def workspace_calls(func: tvm.tirx.PrimFunc) -> int:
        lib = tvm.tirx.build(tvm.IRModule({"k": func.with_attr("global_symbol", "k")}), target=HOST)
        return lib.inspect_source("ll").count("load ptr, ptr @__TVMBackendAllocWorkspace")

    with HOST:
        assert workspace_calls(dense_kernel(1, 576, 1536, "float32", "float16", "k", HOST)) == 0
        assert workspace_calls(dot_kernel(3, 3, 129, 64, register_tile(HOST)[1], "k")) == 0
    # the LUT kernels allocate their tables (K/4 x 16 bytes each, over 1 KiB here) and nothing else
    tables = 3 if "avx512vnni" in shuffle_isas(HOST) else 0
    if tables:
        assert workspace_calls(vnni_kernel(1, 576, 576, "k", planes=2, fused=Fused(post=True))) == tables


@pytest.mark.parametrize("index", [1, -2])
def test_gather_by_a_constant_index_fuses_into_its_consumer(index: int) -> None:
    """A layer's KV cache picked out of the stacked one (GATHER by a constant scalar) is a slice that TVM fuses
    into the cache's concat: one kernel, no copy of its own (take, an indirect read, would be one)."""
    past = Value("past", TensorType((4, 1, 3, 8, 16), DType.FLOAT32))
    new = Value("new", TensorType((1, 3, 1, 16), DType.FLOAT32))
    sel, cat = Value("sel", TensorType((1, 3, 8, 16), DType.FLOAT32)), Value("cat", TensorType((1, 3, 9, 16),
                                                                                               DType.FLOAT32))
    graph = Graph("g", [past, new], [cat], [
        Node(Op.GATHER, [past, Value.const("i", np.array(index, np.int64))], [sel], {"axis": 0}),
        Node(Op.CONCAT, [sel, new], [cat], {"axis": 2})])
    ex = host.build(to_relax(graph, HOST), HOST)
    kernels = [line.split()[1] for line in ex.as_text().splitlines()
               if line.strip().startswith("call") and not line.split()[1].startswith("vm.builtin")]
    assert len(kernels) == 1 and "concatenate" in kernels[0] and "take" not in kernels[0]
    rng = np.random.default_rng(7)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in (past, new)]
    got = host.run(relax.VirtualMachine(ex, tvm.cpu()), xs)[0]
    np.testing.assert_array_equal(got, interp.run(graph, {"past": xs[0], "new": xs[1]})[0])


def _stacked_cache_graph(order: list[int]) -> Graph:
    """A decode step's cache pattern: layer l picks past[l] (GATHER), appends its new rows (CONCAT) and reads the
    result; the appended caches are stacked (RESHAPE + CONCAT on axis 0) in `order` as an output."""
    layers, heads, steps, d = 3, 2, 5, 8
    past = Value("past", TensorType((layers, 1, heads, steps, d), DType.FLOAT32))
    x = Value("x", TensorType((1, heads, 1, d), DType.FLOAT32))
    nodes, stacked, reads = [], {}, []
    for i in range(layers):
        sel, new = Value(f"sel{i}", TensorType((1, heads, steps, d), DType.FLOAT32)), Value(
            f"new{i}", TensorType((1, heads, 1, d), DType.FLOAT32))
        cat, read = (Value(f"{name}{i}", TensorType((1, heads, steps + 1, d), DType.FLOAT32)) for name in ("cat", "sq"))
        stacked[i] = Value(f"r{i}", TensorType((1, 1, heads, steps + 1, d), DType.FLOAT32))
        nodes += [Node(Op.GATHER, [past, Value.const(f"i{i}", np.array(i - layers if i else 0, np.int64))], [sel],
                       {"axis": 0}),
                  Node(Op.MUL, [x, Value.const(f"c{i}", np.array(i + 1.0, np.float32))], [new]),
                  Node(Op.CONCAT, [sel, new], [cat], {"axis": 2}), Node(Op.MUL, [cat, cat], [read]),
                  Node(Op.RESHAPE, [cat], [stacked[i]], {"shape": (1, 1, heads, steps + 1, d)})]
        reads.append(read)
    present = Value("present", TensorType((layers, 1, heads, steps + 1, d), DType.FLOAT32))
    nodes.append(Node(Op.CONCAT, [stacked[i] for i in order], [present], {"axis": 0}))
    return Graph("g", [past, x], [present, *reads], nodes)


@pytest.mark.parametrize("order", [[0, 1, 2], [1, 0, 2]])
def test_stacked_kv_caches_are_appended_in_place(order: list[int]) -> None:
    """The stacked present is past padded once, each layer's rows written into its slice in place and its cache
    read as a view: no per-layer gather, concat or final stack kernel. A stack in another order is not that
    pattern and is emitted as written. Both equal the interpreter exactly."""
    from codegen import kv_cache

    graph = _stacked_cache_graph(order)
    in_place = order == sorted(order)
    assert len(kv_cache.find(graph)) == int(in_place)
    ex = host.build(to_relax(graph, HOST), HOST)
    calls = [line.split()[1] for line in ex.as_text().splitlines() if line.strip().startswith("call")]
    assert (sum(c.startswith("kv_write") for c in calls) == 3) is in_place
    assert any("concatenate" in c or "take" in c for c in calls) is not in_place
    rng = np.random.default_rng(8)
    xs = [rng.standard_normal(v.type.shape).astype(np.float32) for v in graph.inputs]
    got = host.run(relax.VirtualMachine(ex, tvm.cpu()), xs)
    for g, w in zip(got, interp.run(graph, {"past": xs[0], "x": xs[1]}), strict=True):
        np.testing.assert_array_equal(g, w)
