"""What a CPU build runs, read off its final Relax module: every kernel call with its class, the bytes of
constant weights and of activations it touches and its arithmetic, and every other VM call (allocation,
views, shape checks). The calibrated host latency model (hwsim/hostmodel.py) prices this list.

The census is taken by a pass at the end of the CPU pipeline (after fusion, scheduling and memory
planning), so it sees the kernels the build really calls, not the IR nodes they came from."""

import re
from collections import Counter
from typing import Any

import numpy as np
import tvm
from tvm import relax

# Kernel classes, by the generator that made the kernel (codegen/kernels, codegen/kv_cache) or, for TVM's
# own legalised kernels, whether a matmul or a transpose is among the fused ops.
CLASSES = ("lut", "lut_vnni", "accumulate", "dense", "matmul", "attention", "erf", "math", "norm", "layout", "other")
LUTS = ("lut", "lut_vnni")  # codegen/kernels/lut.py (16-entry shuffles) and lut_vnni.py (vpermb + vpdpbusd)
ERF = ("gelu", "erf")  # erf per element (libm's, scalar): GELU
# other transcendental elementwise work (TVM 0.27 names the legalised sigmoid "<lambda>")
MATH = ("tanh", "sigmoid", "<lambda>", "softmax", "exp")
NORMS = ("layer_norm",)  # TVM's LayerNorm kernel (an RMSNorm is a fused mean and scale: "other")
_SHAPE = re.compile(r"_(\d+(?:x\d+)+)")


def classify(name: str) -> str:
    if "_accumulate_lut_avx512vnni_" in name:  # 1.7x the shuffle kernel's speed: a rate of its own
        return "lut_vnni"
    if "_accumulate_lut_" in name:
        return "lut"
    if "_accumulate_" in name:
        return "accumulate"
    if name.startswith("dense_"):
        return "dense"
    if name.startswith("dot_"):
        return "attention"
    if "matmul" in name:
        return "matmul"
    tokens = {t.rstrip("0123456789") for t in name.split("_")}  # whole ops: "exp" is not "expand_dims"
    if tokens & set(ERF):
        return "erf"
    if tokens & set(MATH):
        return "math"
    if any(name.startswith(m) for m in NORMS):
        return "norm"
    return "layout" if "transpose" in name else "other"  # a transpose reads or writes with a stride


def dims(name: str) -> list[int]:
    found = _SHAPE.findall(name)
    return [int(d) for d in found[-1].split("x")] if found else []


def _nbytes(ty: relax.TensorType) -> int:
    return int(np.prod([int(s) for s in ty.shape])) * tvm.DataType(str(ty.dtype)).itemsize


def _flops(name: str, cls: str, shapes: list[tuple[int, ...]]) -> int:
    """Arithmetic of one call: 2*M*N*K for the matmul-like classes (from the generated kernel's name, which
    carries its M x N x K, or from a TVM matmul's first operand and its output), one op per output element
    otherwise."""
    out = int(np.prod(shapes[-1])) if shapes else 0
    if cls in (*LUTS, "accumulate", "dense", "attention"):
        mnk = dims(name)
        return 2 * int(np.prod(mnk)) if mnk else out
    if cls == "matmul" and shapes:
        return 2 * out * shapes[0][-1]
    return out


def kernel_call(name: str, args: list[tuple[tuple[int, ...], int, bool]], parallel: bool) -> dict[str, Any]:
    """One kernel call's record from its arguments (shape, bytes, is a constant), outputs last, and whether
    it runs a parallel loop (a fork and join of the thread pool). An in-place cache write (kv_write) touches
    only the rows it writes, not the whole cache it is handed; a gather (take) only the rows it selects."""
    cls = classify(name)
    weight = sum(b for _, b, const in args if const)
    act = sum(b for _, b, const in args if not const)
    if name.startswith("kv_write"):
        act = 2 * min(b for _, b, const in args if not const)
    if "take" in name:
        weight = min(weight, args[-1][1])
    flops = _flops(name, cls, [s for s, _, _ in args])
    if name.startswith("ternary_accumulate_lut"):
        flops *= 2  # trits as two sign planes: twice the lookups
    return {"name": name, "class": cls, "parallel": parallel, "weight_bytes": weight, "act_bytes": act,
            "flops": flops, "table_entries": table_entries(name, cls)}


def table_entries(name: str, cls: str) -> int:
    """A LUT kernel's tables: per activation row, 16 entries for every group of 4 of its K inputs."""
    mnk = dims(name)
    return 4 * mnk[0] * mnk[2] if cls in LUTS and len(mnk) == 3 else 0


def take(mod: tvm.IRModule) -> dict[str, Any]:
    """The census of a module's `main`: kernel calls grouped by (name, bytes, flops) with counts, and the
    other VM calls by name."""
    kernels: Counter = Counter()
    vm_calls: Counter = Counter()
    records: dict[tuple, dict[str, Any]] = {}
    parallel: dict[str, bool] = {}

    def visit(e: Any) -> None:
        if not isinstance(e, relax.Call):
            return
        op = e.op
        if isinstance(op, relax.GlobalVar) and isinstance(mod[op], tvm.tirx.PrimFunc):
            args = [(tuple(int(s) for s in a.ty.shape), _nbytes(a.ty), type(a).__name__ == "GenericConst")
                    for a in e.args if isinstance(a.ty, relax.TensorType)]
            if op.name_hint not in parallel:
                parallel[op.name_hint] = "T.parallel" in mod[op].script()
            rec = kernel_call(op.name_hint, args, parallel[op.name_hint])
            key = tuple(rec.values())
            records[key] = rec
            kernels[key] += 1
        elif isinstance(op, relax.ExternFunc):
            vm_calls[str(op.global_symbol)] += 1
        elif isinstance(op, relax.GlobalVar):
            vm_calls[op.name_hint] += 1
        else:
            vm_calls[str(getattr(op, "name", op))] += 1

    relax.analysis.post_order_visit(mod["main"].body, visit)
    return {"kernels": [records[k] | {"calls": n} for k, n in kernels.items()],
            "vm_calls": dict(sorted(vm_calls.items()))}


def recorder(sink: list[dict[str, Any]]) -> tvm.transform.Pass:
    """A pass that appends the module's census to `sink` and leaves the module as it is."""

    @tvm.transform.module_pass(opt_level=0, name="Census")
    def census(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        sink.append(take(mod))
        return mod

    return census
