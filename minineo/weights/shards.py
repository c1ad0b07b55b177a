"""A checkpoint's tensors by name: from one file or from the shards an index lists, safetensors or PyTorch.

Hub repositories hold `model.safetensors` or `pytorch_model.bin`, or, for big models, shards
(`model-00001-of-00002.safetensors`, ...) with an index, `{"weight_map": {tensor name: shard file}}`.
"""
import json
import os
from pathlib import Path

from ..errors import MinineoError
from .files import read_small_file, shown
from .safetensors_io import SafetensorsFile
from .torch_bin import TorchBinFile

MAX_INDEX_BYTES = 100_000_000   # an index lists each tensor once: 2.7B's is 30 KB
# (single file, index, reader), in the order minineo prefers them: safetensors needs no unpickling.
FORMATS = [("model.safetensors", "model.safetensors.index.json", SafetensorsFile),
           ("pytorch_model.bin", "pytorch_model.bin.index.json", TorchBinFile)]


def _present(path):  # anything by that name, even a broken link or a link loop, which the reader then names
    return os.path.lexists(path)


def open_checkpoint(directory):  # -> {tensor name: the file that holds it}
    directory = Path(directory)
    for single, index, reader in FORMATS:
        if _present(directory / single) or _present(directory / index):
            return open_sharded(directory, single, index, reader)
    raise MinineoError(f"{directory}: no model.safetensors or pytorch_model.bin (nor a sharded index of either)")


def open_sharded(directory, single, index, reader):
    if _present(directory / single):
        shard = reader(directory / single)
        return {name: shard for name in shard.names()}
    index = directory / index
    data = read_small_file(index, MAX_INDEX_BYTES)
    try:
        files = json.loads(data.decode("utf-8"))["weight_map"]   # {tensor name: shard file name}
    except (ValueError, KeyError, TypeError, RecursionError):
        files = None
    if not isinstance(files, dict) or not all(isinstance(file, str) for file in files.values()):
        raise MinineoError(f"{index}: not a valid index (expected a 'weight_map' object of file names)")
    for file in sorted(set(files.values())):
        check_plain_name(file, index)
        if not _present(directory / file):   # a directory, a FIFO or a link loop: the reader says which
            raise MinineoError(f"{directory / file}: no such file (a shard listed in {index.name})")
    shards = {file: reader(directory / file) for file in sorted(set(files.values()))}
    for name, file in files.items():
        if name not in shards[file]:
            raise MinineoError(f"{directory / file}: missing tensor {shown(name)} (listed in {index.name})")
    return {name: shards[file] for name, file in files.items()}


def check_plain_name(file, index):
    """Refuse a shard name from the index unless it names a file inside the checkpoint directory:
    an index from the internet must not make minineo read (or quantize copy) /etc/passwd."""
    if (file in ("", ".", "..") or "/" in file or "\\" in file or not file.isprintable()
            or Path(file).is_absolute()):
        raise MinineoError(f"{index}: shard name {file!r:.80} is not a plain file name "
                           "(refusing to read outside the checkpoint directory)")
