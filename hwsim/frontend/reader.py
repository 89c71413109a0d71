"""Load an ONNX file (external data included) and fix its input shapes, with one-line errors."""

from pathlib import Path

import google.protobuf.message
import onnx
from onnx import TensorProto

from hwsim.errors import HwsimError
from hwsim.ir import DType

MIN_OPSET, MAX_OPSET = 13, 21

ONNX_DTYPES: dict[int, DType] = {
    TensorProto.FLOAT: DType.FLOAT32,
    TensorProto.FLOAT16: DType.FLOAT16,
    TensorProto.DOUBLE: DType.FLOAT64,
    TensorProto.INT64: DType.INT64,
    TensorProto.INT32: DType.INT32,
    TensorProto.INT16: DType.INT16,
    TensorProto.INT8: DType.INT8,
    TensorProto.UINT8: DType.UINT8,
    TensorProto.UINT32: DType.UINT32,
    TensorProto.BOOL: DType.BOOL,
}


def onnx_dtype(code: int, where: str) -> DType:
    if code not in ONNX_DTYPES:
        name = TensorProto.DataType.Name(code) if code in TensorProto.DataType.values() else str(code)
        raise HwsimError(f"{where}: element type {name} is not supported")
    return ONNX_DTYPES[code]


def load_onnx(path: Path) -> onnx.ModelProto:
    """Read `path` and its external data; reject files that are not ONNX or use opsets outside 13-21."""
    if not path.is_file():
        raise HwsimError(f"{path}: no such file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (google.protobuf.message.DecodeError, ValueError, RuntimeError) as e:
        raise HwsimError(f"{path}: not a readable ONNX model ({type(e).__name__}: {e})") from None
    if not model.graph.node and not model.graph.output:
        raise HwsimError(f"{path}: not an ONNX model (no graph)")
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError, onnx.checker.ValidationError) as e:
        raise HwsimError(f"{path}: cannot read external data ({e})") from None
    opset = default_opset(model)
    if opset is None:
        raise HwsimError(f"{path}: no opset import for the default ONNX domain")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise HwsimError(f"{path}: opset {opset} is not supported (supported: {MIN_OPSET}-{MAX_OPSET})")
    return model


def default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: old IR versions also list initializers among the inputs."""
    inits = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def input_signature(vi: onnx.ValueInfoProto) -> tuple[list[int | str], DType]:
    """Dims of an input (ints, or names for dynamic dims) and its element type."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise HwsimError(f"input '{vi.name}': only tensor inputs are supported")
    dims: list[int | str] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                             for d in tt.shape.dim]
    return dims, onnx_dtype(tt.elem_type, f"input '{vi.name}'")


def parse_shape_option(spec: str) -> tuple[str, tuple[int, ...]]:
    """'name=1x16' (or 1,16) -> ('name', (1, 16))."""
    name, sep, dims = spec.rpartition("=")
    try:
        shape = tuple(int(d) for d in dims.replace(",", "x").split("x")) if dims.strip() else ()
    except ValueError:
        shape = (-1,)
    if not sep or not name or any(d <= 0 for d in shape):
        raise HwsimError(f"--shape '{spec}': expected NAME=DIMS with positive dims, e.g. input_ids=1x16")
    return name, shape


def resolve_shapes(model: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Concrete shape of every input: static dims from the file, dynamic ones from `shapes`."""
    inputs = graph_inputs(model)
    names = [i.name for i in inputs]
    for name in shapes:
        if name not in names:
            raise HwsimError(f"--shape {name}=...: the model has no input '{name}' (inputs: {', '.join(names)})")
    out: dict[str, tuple[int, ...]] = {}
    for vi in inputs:
        dims, _ = input_signature(vi)
        if vi.name in shapes:
            given = shapes[vi.name]
            if len(given) != len(dims) or any(isinstance(d, int) and d > 0 and d != g
                                               for d, g in zip(dims, given, strict=False)):
                raise HwsimError(f"--shape {vi.name}={'x'.join(map(str, given))}: does not fit the "
                                 f"input's dims [{', '.join(map(str, dims))}]")
            out[vi.name] = given
        elif all(isinstance(d, int) and d > 0 for d in dims):
            out[vi.name] = tuple(int(d) for d in dims)
        else:
            raise HwsimError(f"input '{vi.name}' has dynamic dims [{', '.join(map(str, dims))}]: fix them "
                             f"with --shape {vi.name}=" + "x".join(str(d) if isinstance(d, int) and d > 0
                                                                     else "N" for d in dims))
    return out
