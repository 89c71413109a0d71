"""ONNX frontend: the import boundary where ONNX op names are turned into IR ops."""

from hwsim.frontend.importer import import_model, import_onnx
from hwsim.frontend.reader import load_onnx, parse_shape_option

__all__ = ["import_model", "import_onnx", "load_onnx", "parse_shape_option"]
