"""Microbenchmarks that calibrate the host latency model (hwsim/hostmodel.py) on this machine.

Each benchmark is a chain of layers of one op class (a weight format's linear layers at decode and prefill
widths, the LoRDBA branch, attention, norms, elementwise chains), built by the same pipeline as a model and
timed on the runtime's threads. Weights either fit in the last-level cache (they stay there between runs) or
are twice its size (they stream from DRAM every run). The fitted rates and the benchmarks behind them are
cached per CPU, thread count and version of hwsim's code under $HWSIM_CACHE_DIR/calibration.
"""

import functools
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwsim.hostmodel import Calibration, features, fit, predict, regime
from hwsim.ir import DType, Graph, Node, Op, TensorType, Value

F32 = DType.FLOAT32
Layer = Callable[[Value, int], tuple[list[Node], Value]]


def llc_bytes() -> int:
    """The largest cache level's size from sysfs (the targets' nominal figure where sysfs has none)."""
    sizes = []
    for f in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        m = re.fullmatch(r"(\d+)([KMG]?)", f.read_text().strip())
        if m:
            sizes.append(int(m[1]) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m[2]])
    if sizes:
        return max(sizes)
    from targets import load_target

    return load_target("host").cpu.l3_kib << 10


def _chain(name: str, shape: tuple[int, ...], layers: int, layer: Layer, extra: list[Value] | None = None) -> Graph:
    x = Value("x", TensorType(shape, F32))
    nodes: list[Node] = []
    h = x
    for i in range(layers):
        new, h = layer(h, i)
        nodes += new
    return Graph(name, [x, *(extra or [])], [h], nodes)


def _rng(i: int) -> np.random.Generator:
    return np.random.default_rng(1000 + i)


def _linear(fmt: str, d: int, wide: int | None = None) -> Layer:
    """One linear layer in `fmt` to d outputs (to `wide` and back on alternate layers, as an MLP's up and
    down projections: d <-> wide): fp32 or fp16 weights (cast up, as an fp16 base arrives), ternary or sign
    weights packed (an accumulate op with an output scale), or the LoRDBA r=16 branch added to its input."""
    from models.formats.packing import pack_i2, pack_signs

    def layer(x: Value, i: int) -> tuple[list[Node], Value]:
        rng, lead, k = _rng(i), x.type.shape[:-1], x.type.shape[-1]
        n = wide if wide and i % 2 == 0 else d
        y = Value(f"y{i}", TensorType((*lead, n), F32))
        w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
        if fmt == "fp32":
            return [Node(Op.MATMUL, [x, Value.const(f"w{i}", w)], [y])], y
        if fmt == "fp16":
            wc = Value(f"wc{i}", TensorType((k, n), F32))
            return [Node(Op.CAST, [Value.const(f"w{i}", w.astype(np.float16))], [wc], {"to": F32}),
                    Node(Op.MATMUL, [x, wc], [y])], y
        post = Value.const(f"s{i}", np.full(n, 1 / np.sqrt(k), np.float32))
        if fmt in ("ternary", "sign"):
            t = rng.integers(-1, 2, (n, k), dtype=np.int8) if fmt == "ternary" else \
                rng.integers(0, 2, (n, k), dtype=np.int8) * 2 - 1
            packed = Value.const(f"p{i}", pack_i2(t) if fmt == "ternary" else pack_signs(t))
            op = Op.TERNARY_ACCUMULATE if fmt == "ternary" else Op.SIGN_ACCUMULATE
            return [Node(op, [x, packed, post], [y], {"k": k, "pre": 0, "post": 1})], y
        r = 16  # LoRDBA: x -> signs_A (pre, post) -> h -> signs_B (post) + x
        h = Value(f"h{i}", TensorType((*lead, r), F32))
        a = Value.const(f"a{i}", pack_signs(rng.integers(0, 2, (r, d), dtype=np.int8) * 2 - 1))
        b = Value.const(f"b{i}", pack_signs(rng.integers(0, 2, (d, r), dtype=np.int8) * 2 - 1))
        pre = Value.const(f"v{i}", np.full(d, 0.1, np.float32))
        mu = Value.const(f"mu{i}", np.full(r, 0.1, np.float32))
        return [Node(Op.SIGN_ACCUMULATE, [x, a, pre, mu], [h], {"k": d, "pre": 1, "post": 1}),
                Node(Op.SIGN_ACCUMULATE, [h, b, post, x], [y], {"k": r, "pre": 0, "post": 1, "add": 1})], y
    return layer


def _attention(heads: int, m: int, ctx: int, dh: int) -> tuple[Layer, Value]:
    """softmax(q (k^T * scale)) v over a [heads, ctx, dh] cache given as an input, as the exported models
    scale k (a transpose kernel, then a matmul); the output is the next q."""
    kv = Value("kv", TensorType((heads, ctx, dh), F32))

    def layer(q: Value, i: int) -> tuple[list[Node], Value]:
        kt, ks = (Value(f"{n}{i}", TensorType((heads, dh, ctx), F32)) for n in ("kt", "ks"))
        s, p = (Value(f"{n}{i}", TensorType((heads, m, ctx), F32)) for n in "sp")
        o = Value(f"o{i}", TensorType((heads, m, dh), F32))
        scale = Value.const(f"c{i}", np.array(dh ** -0.5, np.float32))
        return [Node(Op.TRANSPOSE, [kv], [kt], {"perm": (0, 2, 1)}), Node(Op.MUL, [kt, scale], [ks]),
                Node(Op.MATMUL, [q, ks], [s]),
                Node(Op.SOFTMAX, [s], [p], {"axis": -1}), Node(Op.MATMUL, [p, kv], [o])], o
    return layer, kv


def _then(first: Layer, op: Op, attrs: dict | None = None) -> Layer:
    """`first`, then a unary op on its output (a linear layer between them keeps them from fusing into one
    kernel); Op.SIGMOID means x * sigmoid(x), SiLU as exporters write it."""

    def layer(x: Value, i: int) -> tuple[list[Node], Value]:
        nodes, h = first(x, i)
        y = Value(f"u{i}", h.type)
        if op is Op.SIGMOID:
            s = Value(f"sg{i}", h.type)
            return [*nodes, Node(Op.SIGMOID, [h], [s]), Node(Op.MUL, [h, s], [y])], y
        return [*nodes, Node(op, [h], [y], attrs or {})], y
    return layer


def _layer_norm(d: int) -> Layer:
    def layer(x: Value, i: int) -> tuple[list[Node], Value]:
        y = Value(f"ln{i}", x.type)
        g, b = (Value.const(f"{n}{i}", np.full(d, v, np.float32)) for n, v in (("g", 1.0), ("b", 0.1)))
        return [Node(Op.LAYER_NORM, [x, g, b], [y], {"axis": x.type.rank - 1, "epsilon": 1e-5})], y
    return layer


def _norm(d: int) -> Layer:
    """RMSNorm: x * rsqrt(mean(x^2) + eps) * gamma."""
    def layer(x: Value, i: int) -> tuple[list[Node], Value]:
        rows = x.type.shape[0]
        full, col = TensorType((rows, d), F32), TensorType((rows, 1), F32)
        sq, y, z = (Value(f"{n}{i}", full) for n in ("sq", "y", "z"))
        mean, eps, root, inv = (Value(f"{n}{i}", col) for n in ("mean", "eps", "root", "inv"))
        return [Node(Op.MUL, [x, x], [sq]), Node(Op.REDUCE_MEAN, [sq], [mean], {"axes": (1,), "keepdims": 1}),
                Node(Op.ADD, [mean, Value.const(f"e{i}", np.array(1e-5, np.float32))], [eps]),
                Node(Op.SQRT, [eps], [root]), Node(Op.RECIPROCAL, [root], [inv]), Node(Op.MUL, [x, inv], [y]),
                Node(Op.MUL, [y, Value.const(f"g{i}", np.ones(d, np.float32))], [z])], z
    return layer


def _dram_overflow(bytes_per_weight: float) -> int:
    """How many times the last-level cache a DRAM benchmark streams: 8 for the float formats, 2 for packed
    ones. A stream's rate falls with its length (its page-table entries leave the caches too: on znver4 the
    same fp16 MLP layers run 29 GB/s as a 268 MB chain, 35 as a 67 MB one, alternated in one process), and a
    float model that overflows the cache does so by as much (smollm2-135m in fp16: 8.5x); a packed one by
    about 2-3x, its fp16 LM head the larger part."""
    return 8 if bytes_per_weight >= 2 else 2


def benchmarks(llc: int) -> dict[str, Callable[[], Graph]]:
    """The microbenchmarks: every weight format at decode (M=1) and prefill widths (M=16, 128) with weights in
    the cache, and at decode (and M=16 for the bases) with weights twice the cache; the LoRDBA branch;
    attention at decode and prefill; RMSNorms, small (dispatch-bound) and large. (A chain of elementwise layers
    would fuse into one kernel.) Each graph
    is made when called (the large ones hold hundreds of MB of weights)."""
    out: dict[str, Callable[[], Graph]] = {}
    bytes_per_weight = {"fp32": 4, "fp16": 2, "ternary": 0.25, "sign": 0.125}
    for fmt, per in bytes_per_weight.items():
        small = 512 if per >= 2 else 1024
        cache_layers = max(2, int(llc / 4 // (small * small * per)))
        cache_layers = min(cache_layers, 8)
        for m in (1, 16, 128):
            out[f"{fmt} {m}x{small}x{small} x{cache_layers} (cache)"] = functools.partial(
                _chain, f"{fmt}_{m}", (m, small), cache_layers, _linear(fmt, small))
        # As a model's layers see them, [1, tokens, d]: a view in and out of every kernel (VM calls); and a
        # small model's layers, where the fixed costs (dispatch, the thread pool's fork and join) dominate.
        out[f"{fmt} 1x1x{small}x{small} x{cache_layers} (cache)"] = functools.partial(
            _chain, f"{fmt}_1_3d", (1, 1, small), cache_layers, _linear(fmt, small))
        out[f"{fmt} 1x1x256x256 x32 (cache)"] = functools.partial(_chain, f"{fmt}_small", (1, 1, 256), 32,
                                                                _linear(fmt, 256))
        if per < 1:  # a LUT kernel's tables at a small model's prefill: 16 rows, narrow layers
            out[f"{fmt} 16x256x256 x32 (cache)"] = functools.partial(_chain, f"{fmt}_small16", (16, 256), 32,
                                                                   _linear(fmt, 256))
        if fmt != "fp32":
            # an MLP of a small model whose width is no multiple of 32 (tiny-llama's 688): in a packed format its
            # down projection takes the shuffle LUT kernel (codegen/kernels/lut.py), not the VNNI one, where the
            # ISA has both; in fp16 its decode GEMVs are too small to fork the thread pool (one core streams)
            for m in (1, 16):
                out[f"{fmt} {m}x256<->688 x16 (cache)"] = functools.partial(
                    _chain, f"{fmt}_mlp{m}", (m, 256), 16, _linear(fmt, 256, 688))
        # Not 2048 for the float formats: a 16-row tile broadcasts x from 16 rows whose stride is a multiple
        # of 4 KiB, which share one L1 set (8-way) and evict each other: 1.7x the time per flop of K=2304
        # (znver4). A benchmark at that shape priced every layer at the pathological rate.
        big = 2304 if per >= 2 else 4096
        dram_layers = int(np.ceil(_dram_overflow(per) * llc / (big * big * per)))
        for m in (1, 16):
            out[f"{fmt} {m}x{big}x{big} x{dram_layers} (dram)"] = functools.partial(
                _chain, f"{fmt}_{m}_dram", (m, big), dram_layers, _linear(fmt, big))
    # A small model's layers from DRAM (the model's weights overflow the cache, not one layer's): an MLP's
    # up and down projections at a 135M-parameter decoder's widths, where each call's stream is short (its
    # start, DRAM latency before the prefetchers run ahead, weighs as much as its length).
    for fmt, per in (("fp16", 2), ("ternary", 0.25)):
        pairs = int(np.ceil(_dram_overflow(per) * llc / (2 * 576 * 1536 * per)))
        out[f"{fmt} 1x576<->1536 x{2 * pairs} (dram)"] = functools.partial(
            _chain, f"{fmt}_mlp_dram", (1, 576), 2 * pairs, _linear(fmt, 576, 1536))
    # a BERT-small encoder's layers at prefill (minilm: 384 <-> 1536), in the cache: the 512-wide chain's rate
    # per flop is 1.4x too fast for them
    out["fp16 16x384<->1536 x12 (cache)"] = functools.partial(_chain, "fp16_bert16", (16, 384), 12,
                                                             _linear("fp16", 384, 1536))
    for m, d in ((1, 576), (16, 576), (128, 768)):
        out[f"lordba r16 {m}x{d} x8"] = functools.partial(_chain, f"lordba_{m}", (m, d), 8, _linear("lordba", d))
    for m, ctx in ((1, 129), (1, 512), (16, 16), (128, 128)):
        layer, kv = _attention(8, m, ctx, 64)
        out[f"attention 8x{m}x{ctx}x64 x8"] = functools.partial(_chain, f"attn_{m}", (8, m, 64), 8, layer, [kv])
    for m, d in ((1, 256), (16, 576), (128, 768)):
        out[f"rmsnorm {m}x{d} x16"] = functools.partial(_chain, f"norm_{m}", (m, d), 16, _norm(d))
    for m in (16, 128):  # two sizes each: a fixed cost and one per element
        out[f"layernorm {m}x384 x12"] = functools.partial(_chain, f"layernorm_{m}", (m, 384), 12, _layer_norm(384))
        out[f"fp16 + gelu {m}x768 x8"] = functools.partial(_chain, f"gelu_{m}", (m, 768), 8, _then(
            _linear("fp16", 768), Op.GELU, {"approximate": "none"}))
    for m in (1, 16):
        out[f"fp16 + silu {m}x576 x8"] = functools.partial(_chain, f"silu_{m}", (m, 576), 8,
                                                           _then(_linear("fp16", 576), Op.SIGMOID))
    return out


def _build(graph: Graph, threads: int) -> tuple[Any, list[np.ndarray], dict[str, Any]]:
    """Build one benchmark for the host as a model is built; its VM, inputs and census."""
    import tvm

    from codegen import host
    from codegen.relax_lower import to_relax
    from hwsim.passes import DEFAULT_PIPELINE, run_pipeline
    from hwsim.reference import random_inputs
    from targets import load_target

    run_pipeline(graph, DEFAULT_PIPELINE)
    target = tvm.target.Target({**host.tvm_target(load_target("host")).export(), "num-cores": threads})
    sink: list[dict[str, Any]] = []
    vm = tvm.relax.VirtualMachine(host.build(to_relax(graph, target), target, sink), tvm.cpu())
    return vm, random_inputs(graph, 0), sink[-1]


def _time(vm: Any, inputs: list[np.ndarray]) -> float:
    from codegen import host

    return float(np.median(host.time_ms(vm, inputs, repeat=10, min_total_s=0.3)))


def calibrate(threads: int, progress: Callable[[str], None] = lambda _: None) -> Calibration:
    """Build and time every microbenchmark, time them all four times again (the lowest median of the five
    passes, spread over two minutes: a burst of load from elsewhere, which halves the DRAM bandwidth here for a
    minute at a time, hits some passes), fit the rates, and record how well they fit."""
    from codegen import host
    from hwsim.api import cpu_name
    from hwsim.artifacts import source_hash

    llc = llc_bytes()
    todo = benchmarks(llc)
    built, ms = {}, {}
    for i, (name, make) in enumerate(todo.items()):
        progress(f"calibrating the host model: {name} ({i + 1}/{len(todo)})")
        built[name] = _build(make(), threads)
        ms[name] = _time(*built[name][:2])
    for again in range(1, 5):
        for name, (vm, inputs, _) in built.items():
            progress(f"calibrating the host model: timing {name} again ({again}/4)")
            ms[name] = min(ms[name], _time(vm, inputs))
    census = {name: b[2] for name, b in built.items()}
    params = fit([features(census[n], llc) for n in todo], [ms[n] * 1e3 for n in todo])
    # The instrument's own cost per call: the smallest norm chain's instrumented total over its plain time.
    tiny = "rmsnorm 1x256 x16"
    profile = host.profile_calls(*built[tiny][:2])
    calls = sum(profile["calls"].values())
    instrument_us = max(0.0, (sum(profile["us"].values()) - ms[tiny] * 1e3) / calls)
    cal = Calibration(cpu=cpu_name(), threads=threads, llc_bytes=llc, source=source_hash(), params=params,
                      instrument_us=round(instrument_us, 3), benchmarks=[])
    rows = [{"name": n, "regime": regime(census[n], llc), "measured_ms": round(ms[n], 4),
             "fitted_ms": round(predict(census[n], cal)["median_ms"], 4)} for n in todo]
    return Calibration(**{**cal.to_json(), "benchmarks": rows})


def cache_path(threads: int) -> Path:
    from hwsim.api import cpu_name
    from hwsim.artifacts import source_hash
    from models.zoo import cache_root

    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-").lower()
    return cache_root() / "calibration" / f"{slug}-{threads}t-{source_hash()[:16]}.json"


def cached(threads: int, progress: Callable[[str], None] = lambda _: None) -> Calibration:
    """This machine's calibration for `threads`, fitted now if no cached one matches this version of hwsim."""
    from hwsim.artifacts import write_atomic

    path = cache_path(threads)
    if path.exists():
        return Calibration.from_json(json.loads(path.read_text()))
    cal = calibrate(threads, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(cal.to_json(), indent=2, sort_keys=True) + "\n")
    return cal


def enabled() -> bool:
    """False where HWSIM_CALIBRATE=0 (the test suite: a calibration takes minutes); a build's manifest then
    says the calibrated model was not run."""
    return os.environ.get("HWSIM_CALIBRATE", "1") != "0"
