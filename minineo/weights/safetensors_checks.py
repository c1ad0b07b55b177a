"""The checks of a safetensors file from the internet, made when it is opened, from its header alone
(no tensor is read); the format itself is in safetensors_io.py.

A header of sane length that fits in the file, UTF-8 JSON, an object of tensors with no name given
twice, each with a dtype the format defines, a shape of integers >= 0 and a byte range that holds
exactly its elements, the ranges tiling the data from its first byte to the end of the file with no
overlap and no hole. Any departure is one MinineoError naming the file and the tensor; a file cut
short (an interrupted download) says so.
"""
import json
import math
import struct

from ..errors import MinineoError, is_int
from .files import json_kind, short, shown

# Every dtype the format defines, with its size in bits: a file may hold tensors minineo cannot read
# (an unused U32 buffer, float8 weights), which are well-formed all the same and fail only if used.
DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32, "F32": 32,
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
}
MAX_HEADER_BYTES = 100_000_000   # the format's own limit on the JSON header (safetensors' MAX_HEADER_SIZE)
INTERRUPTED = "(an interrupted download?)"


def check_header_size(path, first, size):  # the file's first 8 bytes, its size -> the header's length
    if size == 0:
        raise MinineoError(f"{path}: the file is empty {INTERRUPTED}")
    if len(first) < 8:
        raise MinineoError(f"{path}: the file is cut short: {size} bytes, too few for a safetensors file's "
                           f"8-byte header length {INTERRUPTED}")
    (header_size,) = struct.unpack("<Q", first)
    if header_size > MAX_HEADER_BYTES:
        raise MinineoError(f"{path}: not a safetensors file: its first 8 bytes give a header length of "
                           f"{header_size} bytes, more than the format's limit of {MAX_HEADER_BYTES}")
    if 8 + header_size > size:
        raise MinineoError(f"{path}: the file is cut short: its header is {header_size} bytes long but only "
                           f"{size - 8} follow the header length {INTERRUPTED}")
    return header_size


class Duplicate(Exception):
    pass


def no_duplicates(pairs):  # json object_pairs_hook: a name given twice would hide one of its tensors
    result = {}
    for key, value in pairs:
        if key in result:
            raise Duplicate(key)
        result[key] = value
    return result


def check_header_json(path, data, header_size):  # the header's bytes -> the parsed JSON object
    def error(message):
        return MinineoError(f"{path}: not a safetensors file: {message}")
    if len(data) < header_size:   # the file shrank under us
        raise MinineoError(f"{path}: the file is cut short: its header is {header_size} bytes long but only "
                           f"{len(data)} could be read {INTERRUPTED}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"its header is not UTF-8 (byte 0x{data[e.start]:02x} at offset {8 + e.start})") from None
    try:
        header = json.loads(text, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise error(f"its header is not valid JSON ({e.msg} at character {e.pos} of the header)") from None
    except Duplicate as e:
        raise error(f"{shown(e.args[0])} appears twice in the same object of its header") from None
    except RecursionError:
        raise error("its header is nested too deeply") from None
    except ValueError as e:   # an integer of thousands of digits
        raise error(f"its header cannot be read ({short(str(e))})") from None
    if not isinstance(header, dict):
        raise error(f"its header is {json_kind(header)}, expected a JSON object of tensors")
    return header


def check_metadata(path, metadata):  # -> {str: str}
    if metadata is None:
        return {}
    if not (isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())):
        raise MinineoError(f"{path}: __metadata__ in the header must be an object of strings")
    return metadata


def check_entry(path, name, info):  # one tensor's header entry -> {dtype, shape, data_offsets}
    where = f"{path}: tensor {shown(name)}"
    if not isinstance(info, dict):
        raise MinineoError(f"{where}: its header entry is {json_kind(info)}, expected an object with "
                           "dtype, shape and data_offsets")
    for key in ("dtype", "shape", "data_offsets"):
        if key not in info:
            raise MinineoError(f"{where} has no {key} in the header")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not (isinstance(dtype, str) and dtype in DTYPE_BITS):
        raise MinineoError(f"{where} has unknown dtype {shown(dtype) if isinstance(dtype, str) else short(dtype)}, "
                           f"expected one of {', '.join(DTYPE_BITS)}")
    if not (isinstance(shape, list) and all(is_int(n, 0) for n in shape)):
        raise MinineoError(f"{where} has shape {short(shape)}, expected a list of integers >= 0")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(n, 0) for n in offsets)
            and offsets[0] <= offsets[1]):
        raise MinineoError(f"{where} has data_offsets {short(offsets)}, expected [begin, end], "
                           "integers with 0 <= begin <= end")
    bits = math.prod(shape) * DTYPE_BITS[dtype]
    if bits % 8 or offsets[1] - offsets[0] != bits // 8:
        raise MinineoError(f"{where} has data_offsets {offsets}, {offsets[1] - offsets[0]} bytes, but its "
                           f"shape {shape} of {dtype} needs {bits / 8:g} bytes")
    return {"dtype": dtype, "shape": tuple(shape), "data_offsets": tuple(offsets)}


def check_layout(path, header, available):
    """The header's tensors -> {name: {dtype, shape, data_offsets}}, each entry checked, and their byte
    ranges, sorted by where they begin, following each other exactly from byte 0 to `available`."""
    layout = {name: check_entry(path, name, info) for name, info in header.items()}
    end, previous = 0, None
    for name, info in sorted(layout.items(), key=lambda item: item[1]["data_offsets"]):
        begin, stop = info["data_offsets"]
        if begin < end:
            raise MinineoError(f"{path}: tensors {shown(previous)} and {shown(name)} overlap (their data_offsets "
                               f"{list(layout[previous]['data_offsets'])} and {[begin, stop]} share bytes)")
        if begin > end:
            raise MinineoError(f"{path}: bytes [{end}, {begin}) of the data belong to no tensor (a hole in the "
                               f"data_offsets before tensor {shown(name)})")
        end, previous = stop, name
    if end > available:
        raise MinineoError(f"{path}: the file is cut short: its header describes {end} bytes of data but only "
                           f"{available} follow {INTERRUPTED}")
    if end < available:
        raise MinineoError(f"{path}: {available - end} bytes follow the last tensor's data: its header describes "
                           f"{end} bytes of data but {available} follow (not a safetensors file, or a damaged one)")
    return layout
