"""Integer data types a profile can name, with their full ranges and ONNX/numpy equivalents."""

from __future__ import annotations

from typing import Literal

import numpy as np

DType = Literal["uint8", "int8", "uint16", "int16", "uint4", "int4"]

DTYPE_RANGES: dict[str, tuple[int, int]] = {
    "uint8": (0, 255),
    "int8": (-128, 127),
    "uint16": (0, 65535),
    "int16": (-32768, 32767),
    "uint4": (0, 15),
    "int4": (-8, 7),
}

# onnx.TensorProto element type numbers (kept literal so this layer does not import onnx).
ONNX_TYPES: dict[str, int] = {"uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "uint4": 21, "int4": 22}
DTYPE_OF_ONNX: dict[int, str] = {v: k for k, v in ONNX_TYPES.items()}

NUMPY_TYPES: dict[str, type[np.generic]] = {
    "uint8": np.uint8,
    "int8": np.int8,
    "uint16": np.uint16,
    "int16": np.int16,
    "uint4": np.uint8,
    "int4": np.int8,
}
