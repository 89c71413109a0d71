"""The IR verifier: run between passes so a broken graph is caught where it was broken."""

from hwsim.errors import IRError
from hwsim.ir.graph import Graph
from hwsim.ir.infer import infer
from hwsim.ir.ops import OP_DEFS


def verify(graph: Graph) -> None:
    """Check arity, attributes, SSA order, unique names and every node's types; raise IRError."""
    defined: set[int] = {id(v) for v in graph.inputs}
    names: dict[str, int] = {}
    for v in graph.values():
        if names.setdefault(v.name, id(v)) != id(v):
            raise IRError(f"two values named '{v.name}'")
    for n in graph.nodes:
        where = f"node '{n.name}' ({n.op.name})"
        d = OP_DEFS[n.op]
        if not d.min_inputs <= len(n.inputs) <= d.max_inputs:
            raise IRError(f"{where}: {len(n.inputs)} inputs, expected {d.min_inputs}..{d.max_inputs}")
        keys = set(n.attrs)
        if not d.attrs <= keys or keys - d.attrs - d.optional_attrs:
            raise IRError(f"{where}: attributes {sorted(keys)}, expected {sorted(d.attrs)}")
        if d.outputs and len(n.outputs) != d.outputs:
            raise IRError(f"{where}: {len(n.outputs)} outputs, expected {d.outputs}")
        for v in n.inputs:
            if not v.is_const and id(v) not in defined:
                raise IRError(f"{where}: input %{v.name} used before it is defined")
        try:
            types = infer(n.op, [v.type for v in n.inputs], n.attrs)
        except (TypeError, KeyError, ValueError) as e:
            raise IRError(f"{where}: {e}") from e
        got = [v.type for v in n.outputs]
        if types != got:
            raise IRError(f"{where}: outputs typed {[str(t) for t in got]}, "
                          f"inferred {[str(t) for t in types]}")
        for v in n.outputs:
            if v.producer is not n:
                raise IRError(f"{where}: output %{v.name} has a different producer")
            defined.add(id(v))
    for v in graph.outputs:
        if not v.is_const and id(v) not in defined:
            raise IRError(f"graph output %{v.name} is never defined")
