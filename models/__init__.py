"""The torch side: model zoo, ONNX export (and, later, the low-bit formats)."""
