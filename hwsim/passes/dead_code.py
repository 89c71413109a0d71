"""Remove nodes whose outputs reach no graph output (exporters leave shape code and unused outputs)."""

from hwsim.ir import Graph


def eliminate_dead_code(graph: Graph) -> bool:
    live = {id(v) for v in graph.outputs}
    kept = []
    for n in reversed(graph.nodes):
        if any(id(v) in live for v in n.outputs):
            kept.append(n)
            live.update(id(v) for v in n.inputs)
    changed = len(kept) != len(graph.nodes)
    graph.nodes = kept[::-1]
    return changed
