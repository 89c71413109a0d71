"""The hwsim graph IR: typed ops, static tensor types, graphs, a printer and a verifier."""

from hwsim.ir.dtypes import DType
from hwsim.ir.graph import Graph, Layer, Node, TensorType, Value, WeightSource, weight_source
from hwsim.ir.infer import infer
from hwsim.ir.ops import OP_DEFS, Op, OpGroup, accumulate_inputs
from hwsim.ir.printer import print_graph
from hwsim.ir.verify import verify

__all__ = ["OP_DEFS", "DType", "Graph", "Layer", "Node", "Op", "OpGroup", "TensorType", "Value", "WeightSource",
           "accumulate_inputs", "infer", "print_graph", "verify", "weight_source"]
