"""The calibrated host latency model: what a CPU build should take on this machine, from its census of kernel
calls (codegen/census.py) and rates fitted to microbenchmarks run here (codegen/calibrate.py).

A build's time is the sum over its kernel calls of

    fixed[class] (+ fixed[parallel] for a kernel with a parallel loop, + fixed[class, dram] for one that
                 streams its weights from DRAM)
                 + weight bytes x (ns_per_weight_byte[class, regime] (+ [serial] for a kernel without a
                   parallel loop)) + activation bytes x ns_per_act_byte
                 + flops x ns_per_flop[class, regime] (elements x ns_per_element[class]: erf, math, norm)
                 + table entries x ns_per_table_entry (a LUT kernel's tables: 16 per row and group of 4 inputs)

plus every other VM call (allocation, views, shape checks) at vm_call_us. The regime is "cache" when the
weights a run streams fit in half the last-level cache (they stay there from one run to the next, as they do
when a small model is timed in a loop) and "dram" otherwise. The rates are fitted by non-negative least
squares over the microbenchmarks, so each is an effective figure (it folds in the kernel's efficiency, its
threads' fork and join, the VM's dispatch) rather than a datasheet one; the roofline (hwsim/roofline.py)
stays beside it as the first-principles bound.
"""

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

CLASSES = ("lut", "lut_vnni", "accumulate", "dense", "matmul", "attention", "erf", "math", "norm", "layout",
           "other")  # census
WEIGHTED = ("lut", "lut_vnni", "accumulate", "dense", "matmul")  # classes that stream constant weights
COMPUTING = ("lut", "lut_vnni", "accumulate", "dense", "matmul", "attention")  # classes priced per flop
ELEMENTWISE = ("erf", "math", "norm")  # classes priced per output element (transcendentals, LayerNorm)
REGIMES = ("cache", "dram")


def parameter_names() -> list[str]:
    return ([f"fixed_us.{c}" for c in CLASSES] + ["fixed_us.parallel"] + [f"fixed_us.{c}.dram" for c in WEIGHTED]
            + [f"ns_per_weight_byte.{c}.{r}" for c in WEIGHTED for r in REGIMES] + ["ns_per_weight_byte.serial"]
            + [f"ns_per_flop.{c}.{r}" for c in COMPUTING for r in REGIMES]
            + [f"ns_per_element.{c}" for c in ELEMENTWISE] + ["ns_per_table_entry", "ns_per_act_byte", "vm_call_us"])


def weight_bytes(census: dict[str, Any]) -> int:
    """Bytes of constants one run of the build streams."""
    return sum(k["weight_bytes"] * k["calls"] for k in census["kernels"])


def regime(census: dict[str, Any], llc_bytes: int) -> str:
    """"cache" where the weights a run streams fit in half the last-level cache: an L3 shared with other
    cores (and, on a cloud VM, other tenants) and, on AMD, filled only by what L2 evicts does not hold a
    working set near its size from one run to the next (minilm's fp16-base builds, 21 MB of weights in a 32 MB
    L3, measured 1.2-1.3x what the in-cache rates predicted)."""
    return "cache" if weight_bytes(census) <= llc_bytes // 2 else "dram"


def _kernel_features(k: dict[str, Any], where: str) -> dict[str, float]:
    """One call's features in the units of parameter_names (us)."""
    cls = k["class"]
    f = {f"fixed_us.{cls}": 1.0, "fixed_us.parallel": float(k["parallel"]), "ns_per_act_byte": k["act_bytes"] * 1e-3}
    if cls in WEIGHTED:
        f[f"ns_per_weight_byte.{cls}.{where}"] = k["weight_bytes"] * 1e-3
        if where == "dram":  # a stream's start: a short one (a small layer's) runs below the DRAM rate
            f[f"fixed_us.{cls}.dram"] = 1.0
        if not k["parallel"]:  # one core streams it: a small decode GEMV (tiny-llama's) at ~1/2 the rate
            f["ns_per_weight_byte.serial"] = k["weight_bytes"] * 1e-3
    else:  # a norm's scale, a bias: small constants read like activations
        f["ns_per_act_byte"] += k["weight_bytes"] * 1e-3
    if cls in COMPUTING:  # per regime too: a kernel's arithmetic overlaps its stream less well from DRAM
        f[f"ns_per_flop.{cls}.{where}"] = k["flops"] * 1e-3
    if cls in ELEMENTWISE:
        f[f"ns_per_element.{cls}"] = k["flops"] * 1e-3
    if k.get("table_entries"):
        f["ns_per_table_entry"] = k["table_entries"] * 1e-3
    return f


def features(census: dict[str, Any], llc_bytes: int) -> np.ndarray:
    """The build's feature vector (us per unit of each parameter), summed over its calls."""
    names = parameter_names()
    index = {n: i for i, n in enumerate(names)}
    x = np.zeros(len(names))
    where = regime(census, llc_bytes)
    for k in census["kernels"]:
        for name, v in _kernel_features(k, where).items():
            x[index[name]] += v * k["calls"]
    x[index["vm_call_us"]] += sum(census["vm_calls"].values())
    return x


@dataclass(frozen=True)
class Calibration:
    """Fitted rates for one CPU, thread count and version of hwsim's code generation."""
    cpu: str
    threads: int
    llc_bytes: int
    source: str  # hwsim's source hash when fitted
    params: dict[str, float]
    instrument_us: float  # what the VM's per-call instrument adds to a call it times (subtracted per kernel)
    benchmarks: list[dict[str, Any]]  # each microbenchmark: name, census summary, measured and fitted ms

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "Calibration":
        return cls(**d)


def fit(rows: list[np.ndarray], measured_us: list[float]) -> dict[str, float]:
    """Non-negative least squares of the measured times on the features, each row weighted by 1/time so that
    every benchmark counts by its relative error (a 50 us chain of small kernels as much as a 20 ms stream)."""
    from scipy.optimize import nnls

    a = np.array(rows)
    t = np.array(measured_us)
    w = 1.0 / t
    scale = np.maximum(np.abs(a).max(axis=0), 1e-30)  # columns to unit size: the solver's tolerance is absolute
    solution, _ = nnls(a * w[:, None] / scale, t * w, maxiter=50 * a.shape[1])
    return dict(zip(parameter_names(), (solution / scale).tolist(), strict=True))


def predict(census: dict[str, Any], cal: Calibration) -> dict[str, Any]:
    """Predicted ms of one run of the build, per class and per kernel (the costliest first)."""
    p, where = cal.params, regime(census, cal.llc_bytes)
    rows = []
    for k in census["kernels"]:
        us = sum(v * p[name] for name, v in _kernel_features(k, where).items())
        rows.append({"name": k["name"], "class": k["class"], "calls": k["calls"],
                     "predicted_ms": us * k["calls"] * 1e-3})
    vm_calls = sum(census["vm_calls"].values())
    vm_ms = vm_calls * p["vm_call_us"] * 1e-3
    classes = {c: sum(r["predicted_ms"] for r in rows if r["class"] == c) for c in CLASSES}
    return {"median_ms": sum(classes.values()) + vm_ms, "regime": where, "weight_bytes": weight_bytes(census),
            "classes_ms": classes, "vm_calls": vm_calls, "vm_ms": vm_ms, "kernels": rows}
