"""What a safetensors file is, read top to bottom, and minineo's reader and writer of it.

    bytes 0-7     N: the length of the header, an unsigned 64-bit little-endian integer
    next N bytes  the header: a UTF-8 JSON object, one entry per tensor,
                      {"transformer.wte.weight": {"dtype": "F32", "shape": [50257, 768],
                                                  "data_offsets": [begin, end]}, ...}
                  and an optional "__metadata__" object of strings; padded with spaces so that the
                  data starts 8-byte aligned
    the rest      the data: each tensor's elements in row-major order, little-endian, in the bytes
                  [begin, end) counted from the data's first byte

Reading maps the file into memory (mmap): a tensor is a read-only NumPy view of its own bytes, so a
10 GB model opens in well under a second and a page is read from disk only when the model touches
it. The `safetensors` package's NumPy API copies every tensor it loads, so minineo keeps this reader;
tests/test_safetensors.py checks that both read the same. A file from the internet is checked as it
is opened, from its header alone: safetensors_checks.py.
"""
import json
import os
import struct
from pathlib import Path

import numpy as np

from ..errors import MinineoError
from .files import open_regular_file, os_error, shown
from .safetensors_checks import check_header_json, check_header_size, check_layout, check_metadata

# The dtypes minineo reads, as NumPy stores them. NumPy has no bfloat16: BF16 is read as its uint16
# bits and widened to float32 (bfloat16_to_float32).
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
        with open_regular_file(self.path) as f:
            size = os.fstat(f.fileno()).st_size
            try:
                header_size = check_header_size(self.path, f.read(8), size)
                header = check_header_json(self.path, f.read(header_size), header_size)
            except OSError as e:   # a disk error
                raise os_error(self.path, e) from None
            self.data_start = 8 + header_size
            self.metadata = check_metadata(self.path, header.pop("__metadata__", None))
            self.header = check_layout(self.path, header, size - self.data_start)   # {name: {dtype, shape, data_offsets}}
            self._bytes = np.memmap(f, dtype=np.uint8, mode="r") if self.header else None   # the whole file
            if self._bytes is not None:   # int8 worker processes map it too, and check it is this file
                self._bytes.inode = os.fstat(f.fileno()).st_ino

    def __contains__(self, name):
        return name in self.header

    def names(self):
        return list(self.header)

    def shape(self, name):
        return self.header[name]["shape"]

    def dtype(self, name):
        return self.header[name]["dtype"]

    def raw(self, name, copy=False):
        """The tensor as stored (bfloat16 as uint16 bits): a read-only view into the mapped file, or
        with copy=True a private copy read through the file, so that a tensor we copy anyway (to
        quantize it) never has its pages counted twice in memory."""
        info = self.header[name]
        if info["dtype"] not in DTYPES:
            raise MinineoError(f"{self.path}: tensor {shown(name)} has dtype {info['dtype']}, which minineo "
                               f"does not read")
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
            raise MinineoError(f"{self.path}: tensor {shown(name)} is {dtype}, expected a float tensor")
        return array if dtype == "F32" else array.astype(np.float32)


STORED_AS = {np.dtype(t): name for name, t in DTYPES.items() if name != "BF16"}


def write_safetensors(path, tensors, metadata=None):
    """Write {name: array} one tensor at a time, so a 10 GB checkpoint never sits in memory whole:
    a value may also be a (dtype, shape, make) triple whose make() builds the array when its turn comes.
    (The safetensors package's save_file takes every tensor at once, in memory; the quantizer and the
    benchmark write 2.7B-sized files within about one tensor of memory.)"""
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
