"""Deterministic text form of a graph: the IR dump written next to every build."""

import hashlib
from typing import Any

from hwsim.ir.dtypes import DType
from hwsim.ir.graph import Graph, Value


def _attr(v: Any) -> str:
    if isinstance(v, DType):
        return v.value
    if isinstance(v, tuple | list):
        return "(" + ",".join(_attr(x) for x in v) + ")"
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _ref(v: Value) -> str:
    return f"%{v.name}"


def print_graph(graph: Graph) -> str:
    """One line per constant (type, bytes, content hash) and per node, in topological order."""
    lines = [f"graph {graph.name}({', '.join(f'{_ref(v)}: {v.type}' for v in graph.inputs)})"]
    for c in graph.constants():
        digest = hashlib.sha256(c.data.tobytes()).hexdigest()[:12]
        preview = f" = {c.data.tolist()}" if c.type.size <= 8 else ""
        lines.append(f"  const {_ref(c)}: {c.type}  # {c.type.nbytes} B sha256:{digest}{preview}")
    for n in graph.nodes:
        outs = ", ".join(f"{_ref(v)}: {v.type}" for v in n.outputs)
        args = ", ".join(_ref(v) for v in n.inputs)
        attrs = ", ".join(f"{k}={_attr(v)}" for k, v in sorted(n.attrs.items()))
        lines.append(f"  {outs} = {n.op.name}({args}){' {' + attrs + '}' if attrs else ''}  # {n.name}")
    lines.append(f"  return {', '.join(_ref(v) for v in graph.outputs)}")
    return "\n".join(lines) + "\n"
