"""Tensors, nodes and graphs: the data structure every frontend, pass and backend shares."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np

from hwsim.ir.dtypes import DType
from hwsim.ir.ops import Op


@dataclass(frozen=True)
class TensorType:
    """A static shape and an element type; shapes are fixed when the model is imported."""

    shape: tuple[int, ...]
    dtype: DType

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __str__(self) -> str:
        return f"{self.dtype.value}[{','.join(map(str, self.shape))}]"


class Value:
    """An SSA value: a graph input, a node output, or a constant (when `data` is set)."""

    __slots__ = ("data", "name", "producer", "type")

    def __init__(self, name: str, type: TensorType, producer: Node | None = None,
                 data: np.ndarray | None = None):
        self.name = name
        self.type = type
        self.producer = producer
        self.data = data

    @classmethod
    def const(cls, name: str, data: np.ndarray) -> Value:
        data = np.array(data, order="C", copy=not data.flags.c_contiguous)  # keeps 0-d arrays 0-d
        return cls(name, TensorType(tuple(int(d) for d in data.shape), DType.from_np(data.dtype)), data=data)

    @property
    def is_const(self) -> bool:
        return self.data is not None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Node:
    """One op application. Attributes are static Python values, checked against `OP_DEFS`."""

    __slots__ = ("attrs", "inputs", "name", "op", "outputs")

    def __init__(self, op: Op, inputs: list[Value], outputs: list[Value], attrs: dict[str, Any] | None = None,
                 name: str = ""):
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        for out in self.outputs:
            out.producer = self

    def __repr__(self) -> str:
        return f"Node({self.op.name}, {self.name!r})"


@dataclass
class Layer:
    """A format layer found at import (an `ai.hwsim` op, expanded inline from its function body): the
    op's inputs and outputs as IR values. Passes lower it to accumulate ops or record why they did not."""

    op_type: str
    name: str
    inputs: list[Value]
    outputs: list[Value]
    status: str = "expanded inline (dense)"
    lowered: bool = False


@dataclass(frozen=True)
class WeightSource:
    """The constant behind a matmul operand, and how the graph reaches it (see weight_source)."""

    const: Value
    transposed: bool  # an odd number of 2-D transposes on the way
    widened: bool  # cast from fp16 up to fp32 on the way (an fp16 base)
    chain: tuple[Node, ...]  # the casts and transposes passed, consumer first


def weight_source(v: Value) -> WeightSource | None:
    """The constant behind `v` reached through 2-D transposes and fp16 -> fp32 casts, which is how an exported
    linear layer's weight arrives ([out, in] transposed, an fp16 base cast up); None for anything else. A
    backend may read the constant itself: the transposes are a layout, the widening is lossless."""
    chain: list[Node] = []
    while not v.is_const:
        p = v.producer
        if p is None or p.op not in (Op.CAST, Op.TRANSPOSE) or len(p.inputs) != 1:
            return None
        if p.op is Op.TRANSPOSE and tuple(p.attrs["perm"]) != (1, 0):
            return None
        if p.op is Op.CAST and (p.inputs[0].type.dtype, p.outputs[0].type.dtype) != (DType.FLOAT16, DType.FLOAT32):
            return None
        chain.append(p)
        v = p.inputs[0]
    return WeightSource(v, sum(n.op is Op.TRANSPOSE for n in chain) % 2 == 1,
                        any(n.op is Op.CAST for n in chain), tuple(chain))


class Graph:
    """Inputs, outputs and nodes in topological order. Constants hang off the nodes that use them."""

    def __init__(self, name: str, inputs: list[Value], outputs: list[Value], nodes: list[Node],
                 layers: list[Layer] | None = None):
        self.name = name
        self.inputs = inputs
        self.outputs = outputs
        self.nodes = nodes
        self.layers = layers or []

    def clone(self) -> Graph:
        """A copy a pass can rewrite while this graph stays as it is: new nodes and values, constants' data
        shared (a target's own passes run on a clone; reports and the verifier's oracle keep the original)."""
        new: dict[int, Value] = {}

        def copy(v: Value) -> Value:
            if id(v) not in new:
                new[id(v)] = Value(v.name, v.type, data=v.data)
            return new[id(v)]

        inputs = [copy(v) for v in self.inputs]
        nodes = [Node(n.op, [copy(v) for v in n.inputs], [copy(v) for v in n.outputs], n.attrs, name=n.name)
                 for n in self.nodes]
        layers = [Layer(x.op_type, x.name, [copy(v) for v in x.inputs], [copy(v) for v in x.outputs], x.status,
                        x.lowered) for x in self.layers]
        return Graph(self.name, inputs, [copy(v) for v in self.outputs], nodes, layers)

    def values(self) -> Iterator[Value]:
        """Every value once: inputs, then node inputs/outputs in order, then graph outputs."""
        seen: set[int] = set()
        for v in [*self.inputs, *(v for n in self.nodes for v in (*n.inputs, *n.outputs)), *self.outputs]:
            if id(v) not in seen:
                seen.add(id(v))
                yield v

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def consumers(self) -> dict[int, list[Node]]:
        """Map id(value) -> nodes reading it (a node appears once per value even if it reads it twice)."""
        uses: dict[int, list[Node]] = {}
        for n in self.nodes:
            for v in {id(v): v for v in n.inputs}.values():
                uses.setdefault(id(v), []).append(n)
        return uses

    def dependency_graph(self) -> nx.DiGraph:
        """Node-level DAG (edges producer -> consumer), nodes labelled by their index in `self.nodes`."""
        g = nx.DiGraph()
        index = {id(n): i for i, n in enumerate(self.nodes)}
        g.add_nodes_from(range(len(self.nodes)))
        for i, n in enumerate(self.nodes):
            for v in n.inputs:
                if v.producer is not None and id(v.producer) in index:
                    g.add_edge(index[id(v.producer)], i)
        return g

    def toposort(self) -> None:
        """Reorder nodes topologically, keeping the current order where it is free (deterministic)."""
        g = self.dependency_graph()
        try:
            order = list(nx.lexicographical_topological_sort(g))
        except nx.NetworkXUnfeasible as e:
            raise ValueError(f"graph '{self.name}' has a cycle") from e
        self.nodes = [self.nodes[i] for i in order]

    def replace_node(self, old: Node, new: list[Node]) -> None:
        """Put `new` where `old` stood (a rewrite that computes old's outputs by other nodes)."""
        i = self.nodes.index(old)
        self.nodes[i:i + 1] = new

    def replace_all_uses(self, old: Value, new: Value) -> None:
        for n in self.nodes:
            n.inputs = [new if v is old else v for v in n.inputs]
        self.outputs = [new if v is old else v for v in self.outputs]

    def param_bytes(self) -> int:
        return sum(v.type.nbytes for v in self.constants())
