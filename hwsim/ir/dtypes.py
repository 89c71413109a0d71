"""Element types of IR tensors. ONNX type codes are mapped only in the frontend."""

from enum import Enum

import numpy as np


class DType(Enum):
    FLOAT32 = "float32"
    FLOAT16 = "float16"
    FLOAT64 = "float64"
    INT64 = "int64"
    INT32 = "int32"
    INT16 = "int16"
    INT8 = "int8"
    UINT8 = "uint8"
    UINT32 = "uint32"
    BOOL = "bool"

    @property
    def numpy(self) -> np.dtype:
        return np.dtype(self.value)

    @property
    def itemsize(self) -> int:
        return self.numpy.itemsize

    @property
    def is_float(self) -> bool:
        return self in (DType.FLOAT32, DType.FLOAT16, DType.FLOAT64)

    @property
    def is_int(self) -> bool:
        return not self.is_float and self is not DType.BOOL

    @classmethod
    def from_np(cls, dt: np.dtype | type) -> "DType":
        try:
            return cls(np.dtype(dt).name)
        except ValueError:
            raise ValueError(f"no IR dtype for numpy dtype {np.dtype(dt).name}") from None
