"""The reference side of verification: seeded inputs, onnxruntime, and error metrics."""

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hwsim.errors import HwsimError
from hwsim.ir import Graph, Op, Value

# ops that pass an integer input through unchanged in meaning, on the way to an embedding lookup
_PASS_THROUGH = {Op.CAST, Op.RESHAPE, Op.BROADCAST_TO, Op.SLICE, Op.TRANSPOSE}


def _index_bound(graph: Graph, v: Value) -> int | None:
    """If `v` ends up as GATHER indices, the size of the gathered axis (so random ids are valid)."""
    frontier, bounds = [v], []
    consumers = graph.consumers()
    while frontier:
        cur = frontier.pop()
        for n in consumers.get(id(cur), []):
            if n.op is Op.GATHER and n.inputs[1] is cur:
                bounds.append(n.inputs[0].type.shape[n.attrs["axis"]])
            elif n.op in _PASS_THROUGH:
                frontier.extend(n.outputs)
    return min(bounds) if bounds else None


def random_inputs(graph: Graph, seed: int) -> list[np.ndarray]:
    """Seeded inputs: normal floats, token ids within their embedding table, ones for masks."""
    rng = np.random.default_rng(seed)
    out = []
    for v in graph.inputs:
        t = v.type
        if t.dtype.is_float:
            out.append(rng.standard_normal(t.shape).astype(t.dtype.numpy))
        elif t.dtype.is_int:
            bound = _index_bound(graph, v)
            if bound is None and "mask" in v.name.lower():
                out.append(np.ones(t.shape, t.dtype.numpy))
            else:
                out.append(rng.integers(0, bound or 2, t.shape).astype(t.dtype.numpy))
        else:
            out.append(rng.integers(0, 2, t.shape).astype(bool))
    return out


def onnxruntime_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise HwsimError(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0]})") from e


def run_onnxruntime(session, names: list[str], inputs: list[np.ndarray]) -> list[np.ndarray]:
    return session.run(None, dict(zip(names, inputs, strict=True)))


def time_onnxruntime(session, names: list[str], inputs: list[np.ndarray], runs: int,
                     min_total_s: float = 0.0) -> list[float]:
    """Per-run wall times in ms, the loop codegen.host.time_ms times a build with: one warm-up, then at least
    `runs` runs and at least `min_total_s` seconds."""
    feed = dict(zip(names, inputs, strict=True))
    session.run(None, feed)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or (time.perf_counter() - start < min_total_s and len(times) < 10_000):
        t0 = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t0) * 1e3)
    return times


@dataclass(frozen=True)
class Comparison:
    name: str
    max_abs_err: float
    max_rel_err: float  # max abs error / max |reference|: scale-free across outputs
    ok: bool

    def describe(self) -> str:
        return f"output '{self.name}': max abs error {self.max_abs_err:.3g}, relative {self.max_rel_err:.3g}"


def compare(name: str, got: np.ndarray, ref: np.ndarray, rtol: float) -> Comparison:
    if got.shape != ref.shape:
        return Comparison(name, float("inf"), float("inf"), False)
    if not np.issubdtype(ref.dtype, np.floating):
        err = float(np.max(got != ref)) if ref.size else 0.0
        return Comparison(name, err, err, err == 0.0)
    g, r = got.astype(np.float64), ref.astype(np.float64)
    if not np.array_equal(np.isnan(g), np.isnan(r)):
        return Comparison(name, float("nan"), float("nan"), False)
    finite = ~np.isnan(r)
    abs_err = float(np.max(np.abs(g - r)[finite], initial=0.0))
    scale = float(np.max(np.abs(r[finite]), initial=0.0)) or 1.0
    rel = abs_err / scale
    return Comparison(name, abs_err, rel, rel <= rtol)
