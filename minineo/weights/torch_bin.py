"""Reading PyTorch checkpoints (pytorch_model.bin) without torch, and without running their pickle.

torch.save writes a zip archive: `<archive>/data.pkl`, a pickle of the state dict in which each tensor
names its storage, dtype, shape, strides and storage offset, and one raw little-endian file per
storage, `<archive>/data/<key>`. Unpickling data.pkl with pickle or torch.load runs whatever code the
file asks for, so ours resolves only the few globals a state dict uses, to stand-ins that just record
each tensor, and refuses every other. The storages are then mapped straight from the zip: torch stores
them uncompressed and 64-byte aligned, so a tensor is a read-only view of the mapped file.
"""
import io
import pickle
import struct
import zipfile
from collections import OrderedDict, namedtuple
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..errors import MinineoError, is_int
from .files import open_regular_file
from .safetensors_io import DTYPES, SafetensorsFile

# The legacy storage classes torch pickles by name, as safetensors dtype names.
STORAGE_DTYPES = {
    "FloatStorage": "F32", "HalfStorage": "F16", "BFloat16Storage": "BF16", "DoubleStorage": "F64",
    "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL", "ShortStorage": "I16",
    "IntStorage": "I32", "LongStorage": "I64",
}
LOCAL_HEADER = struct.Struct("<4s22xHH")   # signature, 22 bytes we skip, file name and extra field lengths
LEGACY_ADVICE = ("load it once with torch and save_pretrained(..., safe_serialization=True), "
                 "or torch.save it with the default zip format")

# Namedtuples, so that the pickle's BUILD opcode cannot set attributes on them.
StorageType = namedtuple("StorageType", "dtype")       # what a torch.FloatStorage global resolves to
Storage = namedtuple("Storage", "dtype key numel")      # numel counts elements of dtype
Tensor = namedtuple("Tensor", "storage offset shape strides")   # offset and strides in elements


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
    # torch._utils._rebuild_tensor_v2 also passes requires_grad, backward hooks and metadata.
    return Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, *unused):   # an nn.Parameter saved as such: its tensor is all we need
    return data


SAFE_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
}


class _StateDictUnpickler(pickle.Unpickler):
    """Unpickles a state dict into Tensor records; any global beyond SAFE_GLOBALS is refused."""

    def __init__(self, data, path):
        super().__init__(io.BytesIO(data))
        self.path = path

    def find_class(self, module, name):
        asked = f"{module}.{name}"
        if not asked.isprintable():   # a message stays one line, whatever the file spells
            asked = ascii(asked)
        if module == "torch" and name in STORAGE_DTYPES:
            return StorageType(STORAGE_DTYPES[name])
        if (module, name) in SAFE_GLOBALS:
            # A fresh wrapper each time: the pickle's BUILD opcode can set attributes on what it is
            # given, and must not reach the module's own functions, which every later load uses.
            standin = SAFE_GLOBALS[module, name]
            return lambda *args: standin(*args)
        if module.startswith("torch") and (name.endswith("Storage") or name.startswith("_rebuild_")):
            raise MinineoError(f"{self.path}: holds tensors of a kind minineo does not read ({asked}); "
                               f"it reads float32, float16, bfloat16, integer and bool tensors")
        raise MinineoError(f"{self.path}: refusing to load: the pickle asks for {asked}, "
                           "which a checkpoint never needs (it could run code)")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise MinineoError(f"{self.path}: data.pkl refers to something other than a tensor storage: {pid!r:.80}")
        _, storage_type, key, _location, numel = pid
        return Storage(storage_type.dtype, str(key), numel)


def _span(tensor):
    """How many storage elements the tensor reaches past its offset (0 when empty); None if malformed."""
    shape, strides = tensor.shape, tensor.strides
    if not (isinstance(shape, tuple) and isinstance(strides, tuple) and len(shape) == len(strides)
            and all(is_int(v, 0) for v in shape + strides) and is_int(tensor.offset, 0)):
        return None
    if 0 in shape:
        return 0
    return 1 + sum((n - 1) * s for n, s in zip(shape, strides))


def _strided(storage, tensor):  # storage [>= span] from the tensor's first element -> [*shape], read-only
    strides = [s * storage.itemsize for s in tensor.strides]
    return as_strided(storage, tensor.shape, strides, writeable=False)


class TorchBinFile:
    """A torch.save zip checkpoint, read like a SafetensorsFile: names, shapes, dtypes and tensors."""

    def __init__(self, path):
        self.path = Path(path)
        self._check_format()
        members, self._prefix, data_pkl = self._read_archive()
        self.tensors = self._unpickle(data_pkl)   # {name: Tensor}
        self._bytes = np.memmap(self.path, dtype=np.uint8, mode="r")
        self._members = {}     # {storage key: ZipInfo}
        self._starts = {}      # {storage key: where its bytes begin in the file}, stored members only
        self._in_memory = {}   # {storage key: uint8 [file size]}, compressed members once read
        for name, tensor in self.tensors.items():
            self._check_tensor(name, tensor, members)

    def _check_format(self):
        with open_regular_file(self.path) as f:   # a directory, a FIFO, a link loop: refused, never waited on
            magic = f.read(2)
        if magic == b"\x80\x02":   # pickle protocol 2, which the pre-1.6 format begins with
            raise MinineoError(f"{self.path}: is in torch's legacy (pre-zip) format, which minineo "
                               f"does not read; {LEGACY_ADVICE}")
        if magic != b"PK":
            raise MinineoError(f"{self.path}: not a PyTorch checkpoint (not a zip archive)")

    @contextmanager
    def _corrupt(self, what):
        """Any error inside as one line naming the file. A damaged zip or pickle fails in many ways
        (BadZipFile, EOFError, a UnicodeDecodeError on a name, a RuntimeError for a stray 'encrypted'
        flag, a ValueError seeking to a wild offset, an UnpicklingError...), each only a symptom."""
        try:
            yield
        except MinineoError:
            raise
        except Exception as e:
            raise MinineoError(f"{self.path}: unreadable {what}, truncated or corrupt ({e!r:.100})")

    def _read_archive(self):
        """({member name: ZipInfo}, the members' common prefix, the bytes of data.pkl)."""
        with self._corrupt("zip archive"), zipfile.ZipFile(self.path) as archive:
            members = {info.filename: info for info in archive.infolist()}
            pickles = [name for name in members if name.count("/") == 1 and name.endswith("/data.pkl")]
            if len(pickles) != 1:
                raise MinineoError(f"{self.path}: a zip archive, but not one torch.save wrote "
                                   "(expected one <archive>/data.pkl)")
            prefix = pickles[0][:-len("data.pkl")]
            byteorder = prefix + "byteorder"   # absent in files from torch before 1.12: little
            if byteorder in members and archive.read(byteorder) != b"little":
                raise MinineoError(f"{self.path}: saved on a big-endian machine; minineo reads only "
                                   "little-endian checkpoints")
            return members, prefix, archive.read(pickles[0])

    def _unpickle(self, data_pkl):
        with self._corrupt("data.pkl"):
            state = _StateDictUnpickler(data_pkl, self.path).load()
        if not isinstance(state, dict):
            raise MinineoError(f"{self.path}: holds a {type(state).__name__}, not a state dict of tensors")
        for name, value in state.items():
            if not isinstance(name, str):
                raise MinineoError(f"{self.path}: holds a tensor name that is not a string: {name!r:.80}")
            if not isinstance(value, Tensor):
                raise MinineoError(f"{self.path}: entry {name!r:.80} is a {type(value).__name__}, not a "
                                   "tensor (expected a state dict of tensors, as model.state_dict() gives)")
        return state

    def _check_tensor(self, name, tensor, members):
        """That the tensor's storage is in the archive and holds every element its shape and strides reach."""
        storage, span = tensor.storage, _span(tensor)
        if not isinstance(storage, Storage) or span is None or not is_int(storage.numel, 0):
            raise MinineoError(f"{self.path}: tensor {name} is malformed in data.pkl")
        member = members.get(self._prefix + "data/" + storage.key)
        if member is None:
            raise MinineoError(f"{self.path}: tensor {name}: storage {storage.key} is missing from the archive")
        nbytes = storage.numel * np.dtype(DTYPES[storage.dtype]).itemsize
        if member.file_size < nbytes or (span and tensor.offset + span > storage.numel):
            raise MinineoError(f"{self.path}: tensor {name} reaches past the end of storage {storage.key} "
                               "(corrupt checkpoint)")
        self._members[storage.key] = member
        if member.compress_type == zipfile.ZIP_STORED and storage.key not in self._starts:
            self._starts[storage.key] = self._data_start(member)

    def _data_start(self, member):
        # The local header's extra field (torch's padding to 64-byte alignment) can differ in length
        # from the central directory's, so the data's offset is read from the local header itself.
        offset = member.header_offset
        header = bytes(self._bytes[offset:offset + LOCAL_HEADER.size]) if offset >= 0 else b""
        if len(header) < LOCAL_HEADER.size or LOCAL_HEADER.unpack(header)[0] != b"PK\x03\x04":
            raise MinineoError(f"{self.path}: corrupt zip archive (bad local header for {member.filename})")
        _, name_length, extra_length = LOCAL_HEADER.unpack(header)
        start = offset + LOCAL_HEADER.size + name_length + extra_length
        if start + member.file_size > len(self._bytes):
            raise MinineoError(f"{self.path}: truncated ({member.filename} runs past the end of the file)")
        return start

    def __contains__(self, name):
        return name in self.tensors

    def names(self):
        return list(self.tensors)

    def shape(self, name):
        return tuple(self.tensors[name].shape)

    def dtype(self, name):
        return self.tensors[name].storage.dtype

    def _storage(self, storage):  # [numel] of its dtype: a view of the mapped file where it can be
        dtype = np.dtype(DTYPES[storage.dtype])
        nbytes = storage.numel * dtype.itemsize
        if storage.key in self._starts:
            start = self._starts[storage.key]
            data = np.asarray(self._bytes[start:start + nbytes])   # an ndarray view: cheaper to slice than a memmap
        else:
            if storage.key not in self._in_memory:
                self._in_memory[storage.key] = self._read_member(storage.key)
            data = self._in_memory[storage.key][:nbytes]
            if data.size != nbytes:   # as_strided reads wherever it is told: never let it past the end
                raise MinineoError(f"{self.path}: storage {storage.key} is shorter than its tensors need")
        if data.ctypes.data % dtype.alignment:
            data = data.copy()   # NumPy allocates aligned; torch aligns its storages, so this is rare
        return data.view(dtype)

    def _read_member(self, key):  # uint8 [file size], a compressed storage decompressed
        with self._corrupt(f"storage {key}"), zipfile.ZipFile(self.path) as archive:
            return np.frombuffer(archive.read(self._members[key]), np.uint8)

    def _read_span(self, tensor):  # [span] of its dtype: just the elements the tensor reaches, read not mapped
        dtype = np.dtype(DTYPES[tensor.storage.dtype])
        offset = self._starts[tensor.storage.key] + tensor.offset * dtype.itemsize
        return np.fromfile(self.path, dtype, count=_span(tensor), offset=offset)

    def raw(self, name, copy=False):
        """The tensor as stored (bfloat16 as uint16 bits): a read-only view into the mapped file, or
        with copy=True a private copy read through the file, so that a tensor we copy anyway never has
        its pages counted twice in memory."""
        tensor = self.tensors[name]
        if copy and tensor.storage.key in self._starts:
            span = self._read_span(tensor)
            view = _strided(span, tensor)
            # A contiguous tensor is the span itself, already private; a strided one is gathered.
            return span.reshape(tensor.shape) if view.flags.c_contiguous else view.copy()
        view = _strided(self._storage(tensor.storage)[tensor.offset:], tensor)
        return view.copy() if copy else view

    # Converted as from a safetensors file: F32 stays a view, F16 and BF16 become float32 copies.
    float32 = SafetensorsFile.float32
