"""The pass contract: a pass mutates a graph in place and says whether it changed anything."""

from collections.abc import Callable
from dataclasses import dataclass

from hwsim.errors import IRError
from hwsim.ir import Graph, verify


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[Graph], bool]


def run_pipeline(graph: Graph, passes: list[Pass], *, check: bool = True) -> list[str]:
    """Run `passes` in order, verifying after each; returns the names of the passes that changed it."""
    changed = []
    for i, p in enumerate(passes):
        if p.run(graph):
            changed.append(p.name)
        if check:
            try:
                verify(graph)
            except IRError as e:
                before = ", ".join(q.name for q in passes[:i]) or "none"
                raise IRError(f"after pass '{p.name}' (passes before it: {before}): {e}") from e
    return changed
