"""The closed op vocabulary of the IR.

Every op has exactly one meaning, defined by the reference interpreter (`hwsim.interp`). Attributes are
static Python values (ints, tuples, floats, DType): shapes are fixed at import, so everything that ONNX
passes as a shape tensor (Reshape's shape, Slice's starts, ...) is an attribute here.
"""

from dataclasses import dataclass
from enum import Enum, auto


class Op(Enum):
    # elementwise unary
    NEG = auto()
    ABS = auto()
    SQRT = auto()
    RECIPROCAL = auto()
    EXP = auto()
    LOG = auto()
    SIN = auto()
    COS = auto()
    TANH = auto()
    SIGMOID = auto()
    RELU = auto()
    ERF = auto()
    GELU = auto()
    FLOOR = auto()
    CEIL = auto()
    ROUND = auto()  # to nearest, ties to even (ONNX Round)
    ISNAN = auto()
    NOT = auto()
    CAST = auto()
    # elementwise binary (numpy broadcasting)
    ADD = auto()
    SUB = auto()
    MUL = auto()
    DIV = auto()
    POW = auto()
    MAX = auto()
    MIN = auto()
    EQUAL = auto()
    LESS = auto()
    LESS_EQUAL = auto()
    GREATER = auto()
    GREATER_EQUAL = auto()
    AND = auto()
    OR = auto()
    WHERE = auto()
    # integer bit operations (unpacking packed signs and trits)
    SHIFT_LEFT = auto()
    SHIFT_RIGHT = auto()
    BITWISE_AND = auto()
    # contractions and normalisations
    MATMUL = auto()
    SOFTMAX = auto()
    LAYER_NORM = auto()
    REDUCE_SUM = auto()
    REDUCE_MEAN = auto()
    REDUCE_MAX = auto()
    CUMSUM = auto()
    # low-bit accumulations on packed weights (no multiplies inside; scales only at the edges)
    SIGN_ACCUMULATE = auto()
    TERNARY_ACCUMULATE = auto()
    # int8 dot products on Q8_0 blocks: x quantized per block of K to int8 at run time, weights int8 with one scale
    # per block (llama.cpp's Q8_0 x Q8_0)
    Q8_MATMUL = auto()
    # data movement
    RESHAPE = auto()
    TRANSPOSE = auto()
    CONCAT = auto()
    SPLIT = auto()
    SLICE = auto()
    GATHER = auto()
    GATHER_ELEMENTS = auto()
    GATHER_ND = auto()
    BROADCAST_TO = auto()
    TRILU = auto()


class OpGroup:
    """Op families, so rules can match a family without listing each op."""

    UNARY = frozenset({Op.NEG, Op.ABS, Op.SQRT, Op.RECIPROCAL, Op.EXP, Op.LOG, Op.SIN, Op.COS, Op.TANH,
                       Op.SIGMOID, Op.RELU, Op.ERF, Op.GELU, Op.FLOOR, Op.CEIL, Op.ROUND})
    PREDICATE_UNARY = frozenset({Op.ISNAN, Op.NOT})
    ARITH_BINARY = frozenset({Op.ADD, Op.SUB, Op.MUL, Op.DIV, Op.POW, Op.MAX, Op.MIN})
    COMPARE = frozenset({Op.EQUAL, Op.LESS, Op.LESS_EQUAL, Op.GREATER, Op.GREATER_EQUAL})
    LOGICAL = frozenset({Op.AND, Op.OR})
    BITWISE = frozenset({Op.SHIFT_LEFT, Op.SHIFT_RIGHT, Op.BITWISE_AND})
    BINARY = ARITH_BINARY | COMPARE | LOGICAL | BITWISE
    REDUCE = frozenset({Op.REDUCE_SUM, Op.REDUCE_MEAN, Op.REDUCE_MAX})
    ACCUMULATE = frozenset({Op.SIGN_ACCUMULATE, Op.TERNARY_ACCUMULATE})
    # ops that only move or relabel data: free to fold on constants
    LAYOUT = frozenset({Op.RESHAPE, Op.TRANSPOSE})


@dataclass(frozen=True)
class OpDef:
    """Arity and attribute names of an op; the verifier checks nodes against it."""

    min_inputs: int
    max_inputs: int
    attrs: frozenset[str] = frozenset()
    optional_attrs: frozenset[str] = frozenset()
    outputs: int = 1  # 0 = as many as the node declares (SPLIT)


def _defs() -> dict[Op, OpDef]:
    d: dict[Op, OpDef] = {}
    for op in OpGroup.UNARY | OpGroup.PREDICATE_UNARY:
        d[op] = OpDef(1, 1)
    d[Op.GELU] = OpDef(1, 1, frozenset({"approximate"}))
    d[Op.CAST] = OpDef(1, 1, frozenset({"to"}))
    for op in OpGroup.BINARY:
        d[op] = OpDef(2, 2)
    d[Op.WHERE] = OpDef(3, 3)
    d[Op.MATMUL] = OpDef(2, 2)
    d[Op.SOFTMAX] = OpDef(1, 1, frozenset({"axis"}))
    d[Op.LAYER_NORM] = OpDef(2, 3, frozenset({"axis", "epsilon"}))
    for op in OpGroup.REDUCE:
        d[op] = OpDef(1, 1, frozenset({"axes", "keepdims"}))
    # inputs: x, packed, [pre_scale [K]], [post_scale [N] or []], [addend [..., N]]; attrs say which are present
    for op in OpGroup.ACCUMULATE:
        d[op] = OpDef(2, 5, frozenset({"k", "pre", "post"}), frozenset({"add"}))
    d[Op.Q8_MATMUL] = OpDef(3, 3, frozenset({"block"}))  # x [..., K], q int8 [N, K], scales [N, K/block]
    d[Op.RESHAPE] = OpDef(1, 1, frozenset({"shape"}))
    d[Op.TRANSPOSE] = OpDef(1, 1, frozenset({"perm"}))
    d[Op.CONCAT] = OpDef(1, 1 << 16, frozenset({"axis"}))
    d[Op.SPLIT] = OpDef(1, 1, frozenset({"axis", "sizes"}), outputs=0)
    d[Op.SLICE] = OpDef(1, 1, frozenset({"starts", "ends", "axes", "steps"}))
    d[Op.GATHER] = OpDef(2, 2, frozenset({"axis"}))
    d[Op.GATHER_ELEMENTS] = OpDef(2, 2, frozenset({"axis"}))
    d[Op.GATHER_ND] = OpDef(2, 2, frozenset({"batch_dims"}))
    d[Op.CUMSUM] = OpDef(1, 1, frozenset({"axis", "exclusive", "reverse"}))
    d[Op.BROADCAST_TO] = OpDef(1, 1, frozenset({"shape"}))
    d[Op.TRILU] = OpDef(1, 1, frozenset({"upper", "k"}))
    missing = set(Op) - d.keys()
    assert not missing, f"ops without a definition: {missing}"
    return d


OP_DEFS: dict[Op, OpDef] = _defs()


def accumulate_inputs(attrs: dict) -> tuple[str, ...]:
    """The roles of an accumulate node's inputs, in order: x, packed, then whichever of the pre-scale, the
    post-scale and the fused addend its attributes say are present."""
    return ("x", "packed", *(k for k in ("pre", "post", "add") if attrs.get(k)))
