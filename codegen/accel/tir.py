"""Tile a GEMM-shaped layer for the accelerator with a TIR schedule, and read the tile program back out.

The layer is a TE computation C[m, n] = sum_k A[m, k] * W(k, n) over dimensions padded to whole tiles,
W dense ([K, N], or [N, K] when `wt`) or packed sign/ternary rows ([N, K / fields per byte]). The schedule
splits it into tm x tn x tk tiles in the order (io, jo, ko); stages A (per K chunk, or one row block per
io), the W tile and the accumulator tile in the accelerator's buffers (scopes local.inp, local.wgt,
local.acc); tensorizes the tile product into the PE array's GEMM intrinsic, which TVM checks against the
computation; and blockizes the copies (DMA) and the accumulator reset. `tile_events` then walks the loop
nest and returns, in program order, each blockized or tensorized block with its buffer regions evaluated:
the instructions, before buffer addresses and tokens (codegen/accel/emit.py).
"""

from collections.abc import Callable
from dataclasses import dataclass

from tvm import s_tir, te, tirx
from tvm.script import tirx as T

from codegen.accel.tiles import GemmLayer, Tiling

SCOPES = {"A": "local.inp", "W": "local.wgt", "C": "local.acc"}


def _fields(layer: GemmLayer) -> tuple[int, int]:
    """(bits per packed weight, fields per byte)."""
    bits = 1 if layer.kind == "sign" else 2
    return bits, 8 // bits


def _weight(layer: GemmLayer, w: te.Tensor | tirx.Buffer, n: tirx.Expr, k: tirx.Expr) -> tirx.Expr:
    """W(k, n) as fp32: a dense element, or the decoded sign (+-1) / trit (-1, 0, +1) of a packed byte."""
    if not layer.packed:
        return (w[n, k] if layer.wt else w[k, n]).astype("float32")
    bits, per = _fields(layer)
    f = (w[n, k // per] >> ((k % per) * bits).astype("uint8")) & tirx.const((1 << bits) - 1, "uint8")
    if bits == 1:
        return tirx.Select(f == tirx.const(1, "uint8"), tirx.const(1.0, "float32"), tirx.const(-1.0, "float32"))
    return f.astype("float32") - tirx.const(1.0, "float32")


def _w_shape(layer: GemmLayer, n: int, k: int) -> tuple[int, int]:
    if layer.packed:
        return n, k // _fields(layer)[1]
    return (n, k) if layer.wt else (k, n)


def gemm_te(layer: GemmLayer, t: Tiling) -> list[te.Tensor]:
    a = te.placeholder((t.mp, t.kp), layer.a_dtype, name="A")
    w = te.placeholder(_w_shape(layer, t.np_, t.kp), layer.w_dtype, name="W")
    r = te.reduce_axis((0, t.kp), name="k")
    c = te.compute((t.mp, t.np_), lambda i, j: te.sum(a[i, r].astype("float32") * _weight(layer, w, j, r), axis=r),
                   name="C")
    return [a, w, c]


_REGISTERED: set[str] = set()


def gemm_intrinsic(layer: GemmLayer, tm: int, tn: int, tk: int) -> str:
    """Register (once) the PE array's tile product for this layer's kind and dtypes; returns its name."""
    name = (f"hwsim.accel.gemm.{layer.kind}.{layer.a_dtype}.{layer.w_dtype}.{'wt' if layer.wt else 'kn'}."
            f"{tm}x{tn}x{tk}")
    if name in _REGISTERED:
        return name
    ws = _w_shape(layer, tn, tk)

    @T.prim_func(s_tir=True)
    def desc(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (tm, tk), layer.a_dtype, offset_factor=1, scope=SCOPES["A"])
        W = T.match_buffer(w, ws, layer.w_dtype, offset_factor=1, scope=SCOPES["W"])
        C = T.match_buffer(c, (tm, tn), "float32", offset_factor=1, scope=SCOPES["C"])
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], A[0:tm, 0:tk], W[0:ws[0], 0:ws[1]])
            T.writes(C[0:tm, 0:tn])
            for i, j, k in T.grid(tm, tn, tk):
                with T.sblock("update"):
                    vi, vj, vk = T.axis.remap("SSR", [i, j, k])
                    C[vi, vj] = C[vi, vj] + T.Cast("float32", A[vi, vk]) * _weight(layer, W, vj, vk)

    @T.prim_func(s_tir=True)
    def impl(a: T.handle, w: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (tm, tk), layer.a_dtype, offset_factor=1, scope=SCOPES["A"])
        W = T.match_buffer(w, ws, layer.w_dtype, offset_factor=1, scope=SCOPES["W"])
        C = T.match_buffer(c, (tm, tn), "float32", offset_factor=1, scope=SCOPES["C"])
        with T.sblock("root"):
            T.reads(C[0:tm, 0:tn], A[0:tm, 0:tk], W[0:ws[0], 0:ws[1]])
            T.writes(C[0:tm, 0:tn])
            T.evaluate(T.call_extern("int32", "hwsim_accel_gemm", A.data, A.elem_offset, W.data, W.elem_offset,
                                     C.data, C.elem_offset))

    s_tir.TensorIntrin.register(name, desc, impl)
    _REGISTERED.add(name)
    return name


def schedule_gemm(layer: GemmLayer, t: Tiling) -> tirx.PrimFunc:
    """The tiled, staged, tensorized layer (see the module docstring)."""
    sch = s_tir.Schedule(te.create_prim_func(gemm_te(layer, t)))
    block = sch.get_sblock("C")
    i, j, k = sch.get_loops(block)
    io, ii = sch.split(i, factors=[None, t.tm])
    jo, ji = sch.split(j, factors=[None, t.tn])
    ko, ki = sch.split(k, factors=[None, t.tk])
    sch.reorder(io, jo, ko, ii, ji, ki)
    acc = sch.cache_write(block, 0, SCOPES["C"])
    sch.reverse_compute_at(acc, jo)
    a = sch.cache_read(block, 0, SCOPES["A"])
    sch.compute_at(a, io if t.a_at_row else ko)
    w = sch.cache_read(block, 1, SCOPES["W"])
    sch.compute_at(w, ko)
    init = sch.decompose_reduction(block, ko)
    sch.tensorize(ii, gemm_intrinsic(layer, t.tm, t.tn, t.tk))
    for stage in (a, w, init, acc):  # each tile-sized copy (a DMA) and the reset become one block
        loops = sch.get_loops(stage)
        sch.blockize(loops[len(loops) - 2])
    return sch.mod["main"]


@dataclass(frozen=True)
class TileEvent:
    """One blockized or tensorized block in program order: what it is and the regions it touches, each as
    (buffer name, scope, ((min, extent) per dimension))."""

    kind: str  # "load", "gemm", "zero", "store"
    reads: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...]
    writes: tuple[tuple[str, str, tuple[tuple[int, int], ...]], ...]


def _compile(expr: tirx.Expr) -> Callable[[dict], int]:
    """A PrimExpr of loop/block variables as a Python function of their values (fast to evaluate per tile)."""
    ops = {tirx.Add: "({} + {})", tirx.Sub: "({} - {})", tirx.Mul: "({} * {})", tirx.FloorDiv: "({} // {})",
           tirx.FloorMod: "({} % {})", tirx.Min: "min({}, {})", tirx.Max: "max({}, {})"}

    def text(e: tirx.Expr) -> str:
        if isinstance(e, tirx.IntImm):
            return str(int(e.value))
        if isinstance(e, tirx.Var):
            return f"env[{e.name!r}]"
        for cls, fmt in ops.items():
            if isinstance(e, cls):
                return fmt.format(text(e.a), text(e.b))
        raise NotImplementedError(f"index expression {e} ({type(e).__name__})")

    return eval(f"lambda env: {text(expr)}")  # built from TIR nodes above, no user text


def tile_events(func: tirx.PrimFunc) -> list[TileEvent]:
    """Walk the scheduled function: loops are unrolled with their (static) extents, each blockized block is
    evaluated once per iteration."""
    compiled: dict[int, Callable] = {}

    def value(e: tirx.Expr, env: dict) -> int:
        key = e.__chandle__()  # the node's address: Python wrappers of one node are new objects per access
        if key not in compiled:
            compiled[key] = _compile(e)
        return compiled[key](env)

    events: list[TileEvent] = []

    def regions(block: s_tir.SBlock, env: dict, which: str) -> tuple:
        out = []
        for reg in getattr(block, which):
            buf = reg.source
            out.append((buf.name, str(buf.scope()), tuple((value(r.min, env), value(r.extent, env))
                                                         for r in reg.region)))
        return tuple(out)

    def kind_of(reads: tuple, writes: tuple) -> str:
        if not reads:
            return "zero"
        if len(reads) == 1 and reads[0][1] == "global":
            return "load"
        if writes[0][1] == "global":
            return "store"
        return "gemm"

    def visit(stmt: tirx.Stmt, env: dict) -> None:
        if isinstance(stmt, tirx.SeqStmt):
            for s in stmt.seq:
                visit(s, env)
        elif isinstance(stmt, tirx.For):
            lo, extent = value(stmt.min, env), value(stmt.extent, env)
            for v in range(lo, lo + extent):
                visit(stmt.body, {**env, stmt.loop_var.name: v})
        elif isinstance(stmt, s_tir.SBlockRealize):
            block = stmt.block
            if block.name_hint == "root":
                visit(block.body, env)
                return
            inner = {**env, **{iv.var.name: value(b, env) for iv, b in zip(block.iter_vars, stmt.iter_values,
                                                                            strict=True)}}
            reads, writes = regions(block, inner, "reads"), regions(block, inner, "writes")
            events.append(TileEvent(kind_of(reads, writes), reads, writes))
        else:
            raise NotImplementedError(f"unexpected statement in a tiled layer: {type(stmt).__name__}")

    visit(func.body, {})
    return events
