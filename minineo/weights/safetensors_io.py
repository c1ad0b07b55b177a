"""Reading safetensors files without copying them: memory-mapped NumPy views of each tensor.

The format is an 8-byte little-endian header length, a JSON header that gives each tensor's dtype,
shape and byte range, then the raw little-endian data. Mapping the file lets a 10 GB model open in
well under a second; pages are read from disk only as the model touches them.

A file from the internet is checked by the format's own rules when it is opened, from its header
alone (no tensor is read): a header of sane length that fits in the file, a JSON object of tensors,
each with a known dtype, a shape of integers >= 0 and a byte range that holds exactly its elements,
the ranges tiling the data section from its first byte to the end of the file with no overlap and no
hole. Any departure is one MinineoError naming the file and the tensor; a file cut short (an
interrupted download) says so.
"""
import errno
import json
import math
import os
import reprlib
import stat
import struct
from pathlib import Path

import numpy as np

from ..errors import MinineoError, is_int

DTYPES = {
    "F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
    "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_, "I16": np.int16, "I32": np.int32, "I64": np.int64,
}
# Every dtype the format defines, with its size in bits: a file may hold tensors minineo cannot read
# (an unused U32 buffer, float8 weights), which are well-formed all the same and fail only if used.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
MAX_HEADER_BYTES = 100_000_000   # the format's own limit on the JSON header (safetensors' MAX_HEADER_SIZE)
INTERRUPTED = "(an interrupted download?)"


def shown(name):  # a name read from a file, safe to print on one line
    return name if isinstance(name, str) and name.isprintable() else ascii(name)


FILE_KINDS = [(stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
              (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device")]


def _not_regular(path, mode):
    kind = next((kind for test, kind in FILE_KINDS if test(mode)), "something other than a regular file")
    return MinineoError(f"{path}: is {kind}, not a file")


def _os_error(path, e, missing):
    if e.errno == errno.ENOENT and os.path.islink(path):
        return MinineoError(f"{path}: a broken symbolic link (what it points to does not exist)")
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return MinineoError(f"{path}: {missing}")
    if e.errno == errno.ELOOP:
        return MinineoError(f"{path}: a symbolic link loop (too many levels of symbolic links)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return MinineoError(f"{path}: permission denied (the file is not readable)")
    return MinineoError(f"{path}: cannot be read ({(e.strerror or type(e).__name__).lower()})")


NONBLOCK = getattr(os, "O_NONBLOCK", 0)   # POSIX; Windows has no FIFOs to wait on


def open_regular_file(path, missing="no such file"):
    """`path` opened for binary reading, or a one-line MinineoError if it is missing, unreadable, a
    symlink loop, or anything but a regular file. Never blocks: a FIFO is refused before it is opened,
    and the open itself is non-blocking, so a FIFO swapped in between the two is refused, not waited on."""
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        f = open(path, "rb", opener=lambda p, flags: os.open(p, flags | NONBLOCK))
    except OSError as e:
        raise _os_error(path, e, missing) from None
    try:
        mode = os.fstat(f.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise _not_regular(path, mode)
        if NONBLOCK:
            os.set_blocking(f.fileno(), True)
    except BaseException:
        f.close()
        raise
    return f


def read_small_file(path, limit, missing="no such file"):
    """The bytes of a small file (config.json, an index), checked as open_regular_file checks it; one
    bigger than `limit` is refused by its size, before any of it is read."""
    with open_regular_file(path, missing) as f:
        size = os.fstat(f.fileno()).st_size
        # read(n) allocates n bytes before reading: ask for what fstat says is there (and one more, to
        # see a file that grew), never for the limit
        try:
            data = f.read(size + 1) if size <= limit else b""
        except OSError as e:   # a disk error
            raise _os_error(path, e, missing) from None
    if size > limit or len(data) > limit:
        raise MinineoError(f"{path}: {max(size, len(data))} bytes, too big for what it should hold "
                           f"(at most {limit})")
    return data


def bfloat16_to_float32(bits):  # uint16 [...] -> float32 [...]
    # bfloat16 is the top half of a float32, so shifting its bits up 16 places is exact.
    return (bits.astype(np.uint32) << 16).view(np.float32)


def json_kind(value):  # how JSON names a parsed value's type, with an article
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number")


def _short(value):  # a value read from a file, shown in a message: one line, at most ~80 characters
    return reprlib.repr(value)


def _no_duplicates(pairs):  # json object_pairs_hook: a name given twice would hide one of its tensors
    result = {}
    for key, value in pairs:
        if key in result:
            raise _Duplicate(key)
        result[key] = value
    return result


class _Duplicate(Exception):
    pass


class SafetensorsFile:
    def __init__(self, path):
        self.path = Path(path)
        with open_regular_file(self.path) as f:
            size = os.fstat(f.fileno()).st_size
            try:
                header_size = self._header_size(f.read(8), size)
                header = self._parse_header(f.read(header_size), header_size)
            except OSError as e:   # a disk error
                raise _os_error(self.path, e, "no such file") from None
            self.data_start = 8 + header_size
            self.metadata = self._metadata(header.pop("__metadata__", None))
            self.header = self._layout(header, size - self.data_start)   # {name: {dtype, shape, data_offsets}}
            self._bytes = np.memmap(f, dtype=np.uint8, mode="r") if self.header else None

    def _error(self, message):
        return MinineoError(f"{self.path}: {message}")

    def _header_size(self, first, size):
        if size == 0:
            raise self._error(f"the file is empty {INTERRUPTED}")
        if len(first) < 8:
            raise self._error(f"the file is cut short: {size} bytes, too few for a safetensors file's 8-byte "
                              f"header length {INTERRUPTED}")
        (header_size,) = struct.unpack("<Q", first)
        if header_size > MAX_HEADER_BYTES:
            raise self._error(f"not a safetensors file: its first 8 bytes give a header length of {header_size} "
                              f"bytes, more than the format's limit of {MAX_HEADER_BYTES}")
        if 8 + header_size > size:
            raise self._error(f"the file is cut short: its header is {header_size} bytes long but only "
                              f"{size - 8} follow the header length {INTERRUPTED}")
        return header_size

    def _parse_header(self, data, header_size):
        if len(data) < header_size:   # the file shrank under us
            raise self._error(f"the file is cut short: its header is {header_size} bytes long but only "
                              f"{len(data)} could be read {INTERRUPTED}")
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise self._error(f"not a safetensors file: its header is not UTF-8 "
                              f"(byte 0x{data[e.start]:02x} at offset {8 + e.start})") from None
        try:
            header = json.loads(text, object_pairs_hook=_no_duplicates)
        except json.JSONDecodeError as e:
            raise self._error(f"not a safetensors file: its header is not valid JSON "
                              f"({e.msg} at character {e.pos} of the header)") from None
        except _Duplicate as e:
            raise self._error(f"not a safetensors file: {shown(e.args[0])} appears twice in the same "
                              "object of its header") from None
        except RecursionError:
            raise self._error("not a safetensors file: its header is nested too deeply") from None
        except ValueError as e:   # an integer of thousands of digits
            raise self._error(f"not a safetensors file: its header cannot be read ({_short(str(e))})") from None
        if not isinstance(header, dict):
            raise self._error(f"not a safetensors file: its header is {json_kind(header)}, "
                              "expected a JSON object of tensors")
        return header

    def _metadata(self, metadata):
        if metadata is None:
            return {}
        if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
            raise self._error("__metadata__ in the header must be an object of strings")
        return metadata

    def _layout(self, header, available):
        """{name: {dtype, shape, data_offsets}} checked by the format's rules, from the header alone."""
        layout = {}
        for name, info in header.items():
            layout[name] = self._entry(name, info)
        # Sorted by where they begin, the byte ranges must follow each other exactly from byte 0.
        end, previous = 0, None
        for name, info in sorted(layout.items(), key=lambda item: item[1]["data_offsets"]):
            begin, stop = info["data_offsets"]
            if begin < end:
                raise self._error(f"tensors {shown(previous)} and {shown(name)} overlap (their data_offsets "
                                  f"{list(layout[previous]['data_offsets'])} and {[begin, stop]} share bytes)")
            if begin > end:
                raise self._error(f"bytes [{end}, {begin}) of the data belong to no tensor (a hole in the "
                                  f"data_offsets before tensor {shown(name)})")
            end, previous = stop, name
        if end > available:
            raise self._error(f"the file is cut short: its header describes {end} bytes of data but only "
                              f"{available} follow {INTERRUPTED}")
        if end < available:
            raise self._error(f"{available - end} bytes follow the last tensor's data: its header describes "
                              f"{end} bytes of data but {available} follow (not a safetensors file, or a damaged one)")
        return layout

    def _entry(self, name, info):
        where = f"tensor {shown(name)}"
        if not isinstance(info, dict):
            raise self._error(f"{where}: its header entry is {json_kind(info)}, expected an object with "
                              "dtype, shape and data_offsets")
        for key in ("dtype", "shape", "data_offsets"):
            if key not in info:
                raise self._error(f"{where} has no {key} in the header")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if not (isinstance(dtype, str) and dtype in DTYPE_BITS):
            raise self._error(f"{where} has unknown dtype {shown(dtype) if isinstance(dtype, str) else _short(dtype)}, "
                              f"expected one of {', '.join(DTYPE_BITS)}")
        if not (isinstance(shape, list) and all(is_int(n, 0) for n in shape)):
            raise self._error(f"{where} has shape {_short(shape)}, expected a list of integers >= 0")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(n, 0) for n in offsets)
                and offsets[0] <= offsets[1]):
            raise self._error(f"{where} has data_offsets {_short(offsets)}, expected [begin, end], "
                              "integers with 0 <= begin <= end")
        bits = math.prod(shape) * DTYPE_BITS[dtype]
        if bits % 8 or offsets[1] - offsets[0] != bits // 8:
            raise self._error(f"{where} has data_offsets {offsets}, {offsets[1] - offsets[0]} bytes, but its "
                              f"shape {shape} of {dtype} needs {bits / 8:g} bytes")
        return {"dtype": dtype, "shape": tuple(shape), "data_offsets": tuple(offsets)}

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
        with copy=True a private copy read through the file, so that a tensor we copy anyway (into
        the fused q/k/v matrix) never has its pages counted twice in memory."""
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
