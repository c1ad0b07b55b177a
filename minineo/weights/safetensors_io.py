"""Reading safetensors files without copying them: memory-mapped NumPy views of each tensor.

The format is an 8-byte little-endian header length, a JSON header that gives each tensor's dtype,
shape and byte range, then the raw little-endian data. Mapping the file lets a 10 GB model open in
well under a second; pages are read from disk only as the model touches them.
"""
import json
import struct
from pathlib import Path

import numpy as np

from ..errors import MinineoError

DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "I16": np.int16, "I32": np.int32, "I64": np.int64,
}


def bfloat16_to_float32(bits):  # uint16 [...] -> float32 [...]
    # bfloat16 is the top half of a float32, so shifting its bits up 16 places is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32)


class SafetensorsFile:
    def __init__(self, path):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as f:
                (header_size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(header_size))
        except FileNotFoundError:
            raise MinineoError(f"{self.path}: no such file")
        except (struct.error, ValueError, UnicodeDecodeError):
            raise MinineoError(f"{self.path}: not a safetensors file (unreadable header)")
        self.metadata = header.pop("__metadata__", None) or {}
        self.header = header
        self.data_start = 8 + header_size
        self._bytes = np.memmap(self.path, dtype=np.uint8, mode="r") if header else None

    def __contains__(self, name):
        return name in self.header

    def names(self):
        return list(self.header)

    def shape(self, name):
        return tuple(self.header[name]["shape"])

    def dtype(self, name):
        return self.header[name]["dtype"]

    def raw(self, name, copy=False):
        """The tensor as stored (bfloat16 as uint16 bits): a read-only view into the mapped file, or
        with copy=True a private copy read through the file, so that a tensor we copy anyway (into
        the fused q/k/v matrix) never has its pages counted twice in memory."""
        info = self.header[name]
        if info["dtype"] not in DTYPES:
            raise MinineoError(f"{self.path}: tensor {name} has unsupported dtype {info['dtype']}")
        dtype = np.dtype(DTYPES[info["dtype"]])
        begin, end = info["data_offsets"]
        if copy:
            array = np.fromfile(self.path, dtype=dtype, count=(end - begin) // dtype.itemsize,
                                offset=self.data_start + begin)
        else:
            array = self._bytes[self.data_start + begin:self.data_start + end].view(dtype)
        return array.reshape(info["shape"])

    def float32(self, name, copy=False):
        """The tensor as float32: a view of an F32 file unless copy=True; F16 and BF16 are converted."""
        array, dtype = self.raw(name, copy), self.dtype(name)
        if dtype == "BF16":
            return bfloat16_to_float32(array)
        if dtype not in ("F32", "F16", "F64"):
            raise MinineoError(f"{self.path}: tensor {name} is {dtype}, expected a float tensor")
        return array if dtype == "F32" else array.astype(np.float32)


STORED_AS = {np.dtype(t): name for name, t in DTYPES.items() if name != "BF16"}   # NumPy has no bfloat16


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array} one tensor at a time, so a 10 GB checkpoint never sits in memory whole:
    a value may also be a (dtype, shape, make) triple whose make() builds the array when its turn comes."""
    layout, offset = {}, 0
    for name, value in tensors.items():
        dtype, shape = (value.dtype, value.shape) if isinstance(value, np.ndarray) else value[:2]
        size = int(np.prod(shape)) * np.dtype(dtype).itemsize
        layout[name] = {"dtype": STORED_AS[np.dtype(dtype)], "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        layout["__metadata__"] = metadata
    header = json.dumps(layout).encode()
    header += b" " * (-len(header) % 8)   # the format pads the header so that data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for name, value in tensors.items():
            array = value if isinstance(value, np.ndarray) else value[2]()
            np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tofile(f)
