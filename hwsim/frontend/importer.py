"""ONNX -> IR driver: walks the nodes, calls one converter per op type, folds constant subgraphs."""

import ast
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from hwsim.errors import HwsimError, UnsupportedOpError
from hwsim.frontend.reader import default_opset, graph_inputs, input_signature, load_onnx, resolve_shapes
from hwsim.interp import evaluate
from hwsim.ir import Graph, Layer, Node, Op, OpGroup, TensorType, Value, infer, verify

# Constant subgraphs whose tensors are at most this big are evaluated at import (shape arithmetic,
# masks, position ids); bigger ones stay in the graph so weights keep their stored dtype and layout.
FOLD_LIMIT = 1 << 16


class ImportContext:
    """What a converter sees: values by ONNX name, the opset, and `emit` to add IR nodes."""

    def __init__(self, opset: int):
        self.opset = opset
        self.values: dict[str, Value] = {}
        self.nodes: list[Node] = []
        self.node_name = ""
        self.layers: list[Layer] = []
        self._names: set[str] = set()

    def fresh(self, base: str) -> str:
        name, i = base or "v", 0
        while name in self._names:
            i += 1
            name = f"{base}_{i}"
        self._names.add(name)
        return name

    def const(self, data: np.ndarray | float | int, base: str = "c", dtype: Any = None) -> Value:
        return Value.const(self.fresh(base), np.asarray(data, dtype=dtype))

    def fail(self, msg: str) -> HwsimError:
        return HwsimError(f"node '{self.node_name}': {msg}")

    def static(self, v: Value | None, what: str) -> np.ndarray:
        """The value of an input that must be known at compile time (a shape, axes, starts...)."""
        if v is None or not v.is_const:
            raise self.fail(f"input '{what}' must be a constant (data-dependent shapes are not supported)")
        return v.data

    def emit(self, op: Op, inputs: list[Value], attrs: dict[str, Any] | None = None,
             names: list[str] | None = None, n_outputs: int = 1) -> list[Value]:
        attrs = attrs or {}
        try:
            types = infer(op, [v.type for v in inputs], attrs)
        except (TypeError, KeyError, ValueError) as e:
            raise self.fail(f"{op.name}: {e}") from None
        names = names or [f"{self.node_name}_out{i}" if len(types) > 1 else self.node_name
                          for i in range(len(types))]
        if all(v.is_const for v in inputs) and (op in OpGroup.LAYOUT or max(
                t.size for t in [*types, *(v.type for v in inputs)]) <= FOLD_LIMIT):
            arrays = evaluate(op, [v.data for v in inputs], attrs)
            return [Value.const(self.fresh(n), a) for n, a in zip(names, arrays, strict=True)]
        outs = [Value(self.fresh(n), t) for n, t in zip(names, types, strict=True)]
        self.nodes.append(Node(op, inputs, outs, attrs, name=self.node_name))
        return outs

    def emit1(self, op: Op, inputs: list[Value], attrs: dict[str, Any] | None = None,
              name: str | None = None) -> Value:
        return self.emit(op, inputs, attrs, [name] if name else None)[0]


def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def import_model(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]] | None = None,
                 name: str = "model") -> Graph:
    """Convert a loaded ONNX model to a verified IR graph with static shapes (dead code included)."""
    opset = default_opset(model) or 0
    fixed = resolve_shapes(model, dict(shapes or {}))
    ctx = ImportContext(opset)
    used = {n for node in model.graph.node for n in node.input} | {o.name for o in model.graph.output}
    inputs = []
    for vi in graph_inputs(model):
        _, dtype = input_signature(vi)
        v = Value(ctx.fresh(vi.name), TensorType(fixed[vi.name], dtype))
        ctx.values[vi.name] = v
        inputs.append(v)
    for t in model.graph.initializer:
        ctx.values[t.name] = Value.const(ctx.fresh(t.name), numpy_helper.to_array(t))
    functions = {(f.domain, f.name): f for f in model.functions}
    _import_nodes(ctx, list(model.graph.node), ctx.values, functions, used, prefix="")
    outputs = []
    for o in model.graph.output:
        if o.name not in ctx.values:
            raise HwsimError(f"graph output '{o.name}' is not produced by any node")
        outputs.append(ctx.values[o.name])
    graph = Graph(name, inputs, outputs, ctx.nodes, ctx.layers)
    verify(graph)
    return graph


def _import_nodes(ctx: ImportContext, nodes: list[onnx.NodeProto], scope: dict[str, Value],
                  functions: dict[tuple[str, str], onnx.FunctionProto], used: set[str], prefix: str) -> None:
    """Convert `nodes` reading and writing values in `scope` (the graph's, or an inlined function's)."""
    from hwsim.frontend.onnx_ops import CONVERTERS

    for i, node in enumerate(nodes):
        ctx.node_name = prefix + (node.name or f"{node.op_type}_{i}")
        ins = []
        for n in node.input:
            if n and n not in scope:
                raise ctx.fail(f"input '{n}' is not defined before use")
            ins.append(scope[n] if n else None)
        if (node.domain, node.op_type) in functions:
            outs = _inline(ctx, node, ins, functions, used)
        elif node.domain in ("", "ai.onnx") and node.op_type in CONVERTERS:
            outs = CONVERTERS[node.op_type](ctx, node, ins)
        else:
            raise UnsupportedOpError(node.op_type, ctx.node_name, node.domain, ctx.opset)
        for out_name, v in zip(node.output, outs, strict=False):
            if out_name:
                scope[out_name] = v
        for k, out_name in enumerate(node.output[len(outs):], start=len(outs)):
            if out_name in used:
                raise ctx.fail(f"{node.op_type} output #{k} ('{out_name}') is used but not supported")


def _inline(ctx: ImportContext, node: onnx.NodeProto, ins: list[Value | None],
            functions: dict[tuple[str, str], onnx.FunctionProto], used: set[str]) -> list[Value]:
    """Expand a model-local function (e.g. an ai.hwsim format op) into IR ops, in its own scope."""
    fn = functions[(node.domain, node.op_type)]
    if len(ins) > len(fn.input) or any(v is None for v in ins):
        raise ctx.fail(f"{node.domain}::{node.op_type}: expected inputs {list(fn.input)}")
    scope = {formal: v for formal, v in zip(fn.input, ins, strict=False)}
    body_used = {n for b in fn.node for n in b.input} | set(fn.output)
    outer_opset, name = ctx.opset, ctx.node_name
    ctx.opset = next((o.version for o in fn.opset_import if o.domain in ("", "ai.onnx")), outer_opset)
    if ctx.opset != outer_opset:
        raise ctx.fail(f"function {node.domain}::{node.op_type} uses opset {ctx.opset}, the model {outer_opset}")
    _import_nodes(ctx, list(fn.node), scope, functions, body_used, prefix=f"{name}/")
    ctx.opset, ctx.node_name = outer_opset, name
    missing = [o for o in fn.output if o not in scope]
    if missing:
        raise ctx.fail(f"function {node.domain}::{node.op_type} never defines output {missing[0]}")
    outs = [scope[o] for o in fn.output]
    ctx.layers.append(Layer(node.op_type, _module_scope(node) or name, [v for v in ins if v is not None], outs))
    return outs


def _module_scope(node: onnx.NodeProto) -> str | None:
    """The torch module path the dynamo exporter records for a node (e.g. model.layers.0.mlp.up_proj)."""
    for prop in node.metadata_props:
        if prop.key == "pkg.torch.onnx.name_scopes":
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return None
            modules = [str(x) for x in scopes if "." in str(x)]  # the last entry names the op call itself
            return modules[-1] if modules else None
    return None


def import_onnx(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> Graph:
    return import_model(load_onnx(path), shapes, name=graph_name(path))


def graph_name(path: Path) -> str:
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return stem if stem and not stem[0].isdigit() else f"m_{stem}"
