"""The verification reference, defined once: onnxruntime computing the IR's semantics, with a tolerance
derived from the reduced-precision ops on the path.

The IR defines an fp16 op as computed in fp32 and rounded to fp16 once (`hwsim.interp`: fp16 matmuls
accumulate in fp32). onnxruntime's own fp16 kernels need not do that (MLAS accumulates in fp16 on CPUs with
fp16 arithmetic), so a verdict against them depends on the machine. The reference is therefore an *exact
twin* of the model: every node that computes on fp16 values gets them widened to fp32 (exact), computes in
fp32 and rounds each fp16 output back (one rounding, as the IR says). Any onnxruntime, any CPU, computes
the IR's semantics on it, up to fp32 summation order.

The tolerance follows from that. An artifact and the twin round the same values at the same points, and
their fp32 values before each rounding differ only by summation order, so each rounding lands on the same
fp16 neighbour or on the next one: an error of at most twice the rounding's own. The twin is run once more
with no fp16 rounding at all (fp16 constants widened, roundings to fp16 made fp32); the difference,
`fp16_rounding`, is the whole effect of the fp16 roundings on each output, measured on the same inputs. The
tolerance of an output is `rtol + 2 * fp16_rounding`: rtol is the budget of fp32 summation order alone (all
that remains on an fp32 path, where fp16_rounding is 0).

Rounding to integers is treated the same way: a Q8_0 matmul quantizes its activations per block with Round
(models/onnx_functions.py), and a value that differs by summation order may round to the neighbouring integer.
The unrounded twin makes those Rounds identities too, so `fp16_rounding` includes their effect.
"""

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from hwsim.errors import HwsimError, VerificationError
from hwsim.reference import Comparison, compare

F16, F32 = TensorProto.FLOAT16, TensorProto.FLOAT
_NO_ARITHMETIC = {"Cast", "Shape", "Size"}
RULE = ("tolerance = rtol + 2 x fp16_rounding: the reference is onnxruntime on the model's exact twin (every op "
        "on fp16 values computed in fp32 and rounded to fp16 once, the IR's semantics); fp16_rounding is the "
        "output's change when the twin rounds nothing to fp16 (nor to integers: quantized activations' Round), "
        "max |twin - unrounded twin| / max |twin|; a rounding an artifact does on a value that differs only by "
        "summation order lands at most one step away, twice the rounding's own error; rtol is the budget for fp32 "
        "summation order")


def _types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every value name in the main graph (after shape inference)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    out = {t.name: t.data_type for t in g.initializer}
    for vi in (*g.input, *g.output, *g.value_info):
        if vi.type.HasField("tensor_type"):
            out[vi.name] = vi.type.tensor_type.elem_type
    for n in g.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    out[n.output[0]] = a.t.data_type
    return out


def _inline(model: onnx.ModelProto) -> onnx.ModelProto:
    """Model-local functions (the ai.hwsim ops) inlined: their fp16 scales are rewritten like the rest."""
    import onnx.inliner

    if not model.functions:
        return model
    return onnx.inliner.inline_local_functions(model)


def _fp16_compute_nodes(model: onnx.ModelProto, types: dict[str, int]) -> Iterator[int]:
    """Indices of the nodes that compute on fp16 values (a Cast converts, exactly or by one rounding; Shape and
    Size read no values)."""
    for i, n in enumerate(model.graph.node):
        if n.op_type not in _NO_ARITHMETIC and any(types.get(x) == F16 for x in n.input if x):
            yield i


def exact_twin(model: onnx.ModelProto, *, round_fp16: bool = True) -> tuple[onnx.ModelProto, int]:
    """The model with every fp16 computation done in fp32 and rounded once (round_fp16), or with no fp16
    rounding anywhere and every Round an identity (not round_fp16). Returns it and the number of fp16 ops
    rewritten (0: fp32 path)."""
    model = _inline(model)
    types = _types(model)
    rewrite = set(_fp16_compute_nodes(model, types))
    if not rewrite and (round_fp16 or not integer_roundings(model)):
        return model, 0
    twin = onnx.ModelProto()
    twin.CopyFrom(model)
    g = twin.graph
    widened: dict[str, str] = {}
    new_nodes: list[onnx.NodeProto] = []
    for i, orig in enumerate(g.node):
        node = onnx.NodeProto()
        node.CopyFrom(orig)  # copies: the graph's own node list is replaced below
        if i not in rewrite:
            new_nodes.append(node)
            continue
        for idx, name in enumerate(node.input):
            if name and types.get(name) == F16:
                if name not in widened:
                    widened[name] = f"{name}__hwsim_f32"
                    new_nodes.append(helper.make_node("Cast", [name], [widened[name]], to=F32))
                node.input[idx] = widened[name]
        outs = list(node.output)
        for idx, name in enumerate(outs):
            if name and types.get(name) == F16:
                node.output[idx] = f"{name}__hwsim_f32out"
        new_nodes.append(node)
        for idx, name in enumerate(outs):
            if name and types.get(name) == F16:
                new_nodes.append(helper.make_node("Cast", [node.output[idx]], [name], to=F16))
    del g.node[:]
    g.node.extend(new_nodes)
    del g.value_info[:]  # types changed; onnxruntime infers them again
    if not round_fp16:
        _drop_fp16_rounding(g)
    return twin, len(rewrite)


def integer_roundings(model: onnx.ModelProto) -> int:
    """Round nodes the model runs (activations quantized at run time), those in its local functions' bodies
    counted per call: the same number before and after inlining, without inlining."""
    functions = {(f.domain, f.name): f for f in model.functions}

    def count(nodes: Iterable[onnx.NodeProto]) -> int:
        return sum(count(functions[(n.domain, n.op_type)].node) if (n.domain, n.op_type) in functions
                   else n.op_type == "Round" for n in nodes)
    return count(model.graph.node)


def _drop_fp16_rounding(g: onnx.GraphProto) -> None:
    """fp16 constants widened (exact) and every rounding to fp16 made a cast to fp32, the graph's fp16 outputs
    included (declared fp32 here): the final rounding is part of the measured effect too. Rounds to integers
    become identities."""
    for n in g.node:
        if n.op_type == "Round":
            n.op_type = "Identity"
    for i, t in enumerate(g.initializer):
        if t.data_type == F16:
            g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float32), t.name))
    for n in g.node:
        for a in n.attribute:
            if a.name == "value" and a.t.data_type == F16 and n.op_type in ("Constant", "ConstantOfShape"):
                a.t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(a.t).astype(np.float32), a.t.name))
            if n.op_type == "Cast" and a.name == "to" and a.i == F16:
                a.i = F32
    for vi in g.output:
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type = F32


@dataclass(frozen=True)
class Reference:
    """Reference outputs of one model on one set of inputs, and each output's derived tolerance."""

    names: list[str]
    outputs: list[np.ndarray]
    fp16_rounding: list[float]  # per output: max |twin - unrounded twin| / max |twin|
    fp16_ops: int  # ops the twin computes in fp32 instead of fp16 (0: an fp32 path)
    rtol: float
    integer_roundings: int = 0  # Round nodes (quantized activations) whose effect fp16_rounding includes

    def tolerance(self, i: int) -> float:
        return self.rtol + 2 * self.fp16_rounding[i]

    def check(self, i: int, got: np.ndarray) -> Comparison:
        return compare(self.names[i], got, self.outputs[i], self.tolerance(i))

    def record(self) -> dict[str, Any]:
        """How the reference and the tolerance were made, for the manifest."""
        return {"reference": "onnxruntime on the exact twin" if self.fp16_ops else "onnxruntime",
                "fp16_ops_widened": self.fp16_ops, "integer_roundings": self.integer_roundings, "rtol": self.rtol,
                "tolerance_rule": RULE}

    def row(self, i: int) -> dict[str, Any]:
        return {"tolerance": float(f"{self.tolerance(i):.4g}"), "fp16_rounding": float(f"{self.fp16_rounding[i]:.4g}")}


def _session(model: onnx.ModelProto, threads: int) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # as written: onnxruntime's graph rewrites drop a Cast pair fp32 -> fp16 -> fp32 (a rounding) where the
    # CPU has no fp16 kernels, and keep it where it has, which made the old verdicts machine-dependent
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def reference(path: Path | onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float,
              threads: int = 1) -> Reference:
    """Run the exact twin (and, when fp16 ops are on the path, the unrounded twin) on `feeds`."""
    model = onnx.load(str(path)) if isinstance(path, Path | str) else path
    twin, count = exact_twin(model)
    rounds = integer_roundings(model)
    try:
        session = _session(twin, threads)
        names = [o.name for o in session.get_outputs()]
        outs = session.run(None, feeds)
        rounding = [0.0] * len(outs)
        if count or rounds:
            free = _session(exact_twin(model, round_fp16=False)[0], threads).run(None, feeds)
            rounding = [_rel(a, b) for a, b in zip(outs, free, strict=True)]
    except HwsimError:
        raise
    except Exception as e:  # onnxruntime raises its own exception types
        where = path if isinstance(path, Path | str) else model.graph.name
        raise HwsimError(f"{where}: onnxruntime cannot run the model's exact twin ({str(e).splitlines()[0]})") \
            from e
    return Reference(names, outs, rounding, count, rtol, rounds)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    if not np.issubdtype(a.dtype, np.floating):
        return 0.0
    x, y = a.astype(np.float64), b.astype(np.float64)
    finite = np.isfinite(x) & np.isfinite(y)
    scale = float(np.max(np.abs(x[finite]), initial=0.0)) or 1.0
    return float(np.max(np.abs(x - y)[finite], initial=0.0)) / scale


def verify_outputs(ref: Reference, got: list[np.ndarray], oracle: list[np.ndarray] | None,
                   what: str) -> list[dict[str, Any]]:
    """Each output of an artifact against the reference within its tolerance, and against the interpreter
    (the IR's semantics in numpy) when given; the manifest rows, or VerificationError naming every miss."""
    rows, misses = [], []
    for i, g in enumerate(got):
        c = ref.check(i, g)
        row = {"name": c.name, "shape": list(ref.outputs[i].shape), "dtype": str(ref.outputs[i].dtype),
               "max_abs_err": c.max_abs_err, "max_rel_err": c.max_rel_err, **ref.row(i)}
        ok = c.ok
        if oracle is not None:
            vs_interp = compare(c.name, g, oracle[i], ref.tolerance(i))
            row["interpreter_max_rel_err"] = ref.check(i, oracle[i]).max_rel_err
            row["vs_interpreter_max_rel_err"] = vs_interp.max_rel_err
            ok = ok and vs_interp.ok
        row["ok"] = ok
        rows.append(row)
        if not ok:
            misses.append(f"{c.describe()} exceeds its tolerance {ref.tolerance(i):.3g} (rtol {ref.rtol:g} + 2 x "
                          f"fp16 rounding {ref.fp16_rounding[i]:.3g})"
                          + (f", vs the interpreter {row['vs_interpreter_max_rel_err']:.3g}" if oracle else ""))
    if misses:
        raise VerificationError("; ".join(misses) + f" ({what} vs onnxruntime)")
    return rows
