"""Write an int8 copy of a checkpoint, once, so that loading it needs neither the float32 file nor
the time to quantize it:

    python -m minineo.quantize SRC DST [--force]      (the command: minineo/commands/quantize.py)

SRC is anything `-m` takes: a directory (safetensors or PyTorch .bin), a Hub id, 125M / 1.3B / 2.7B,
or a bundled model's name.

Every weight matrix except wpe (the same ones as `minineo.load(SRC, int8=True)`) is stored as int8
under its Hub name, with a float32 `<name>_scale` [out] beside it: W ~= q * scale[:, None].
Norms, biases and wpe stay float32. `minineo.load(DST)` maps the file, so the weights cost 1 byte
each in memory and only the pages the model touches are read.

The source is read one tensor at a time, by file reads rather than a mapping, and the destination
is written one tensor at a time: converting the 10.6 GB GPT-Neo 2.7B needs about one tensor of
memory (wte, 0.5 GB), not the whole model.
"""
import glob
import json
import os
import shutil
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..errors import MinineoError
from .checkpoint import SCALE_SUFFIX, check_tensors, expected_shapes, is_quantized, quantize_rows
from .config import load_config
from .hub import resolve
from .safetensors_io import write_safetensors
from .shards import open_checkpoint

MARKER = {"method": "minineo-int8-rowwise", "bits": 8}   # added to config.json as "quantization"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json")


def int8_tensors(files, shapes):
    """{name: (dtype, shape, make)} for write_safetensors: each matrix's make() reads and quantizes
    it and keeps its scale for the `_scale` entry written right after it."""
    tensors, last = {}, {}

    def read(name):   # a private float32 copy read through the file: no pages of SRC stay mapped
        w = files[name].float32(name, copy=True)
        if not np.isfinite(w).all():   # every value is read here anyway: refuse to carry NaN or inf on
            raise MinineoError(f"{files[name].path}: tensor {name} holds non-finite values (NaN or inf)")
        return w

    def make_q(name):
        def make():
            w = quantize_rows(read(name))   # the same function as load(..., int8=True)
            last["scale"] = w.scale
            return w.q
        return make

    def make_scale():
        return last.pop("scale")

    for name, shape in shapes.items():
        if is_quantized(name, shape):
            tensors[name] = (np.int8, shape, make_q(name))
            tensors[name + SCALE_SUFFIX] = (np.float32, shape[:1], make_scale)
        else:
            tensors[name] = (np.float32, shape, lambda name=name: read(name))
    return tensors


def check_source(src):
    src = resolve(src)
    config_path = src / "config.json"
    config = load_config(config_path)
    if "quantization" in json.loads(config_path.read_bytes().decode("utf-8")):
        raise MinineoError(f"{src}: already quantized (config.json has 'quantization'); "
                           "pass the float checkpoint it was made from")
    files = open_checkpoint(src)
    int8 = sorted(name for name in files if files[name].dtype(name) == "I8")
    if int8:
        raise MinineoError(f"{src}: already holds int8 tensors ({int8[0]}, ...); "
                           "pass the float checkpoint it was made from")
    check_tensors(files, config, src)
    return src, config, files


def checkpoint_files(dst):  # the files of a checkpoint in dst that --force replaces, and only those
    return [*dst.glob("model*.safetensors"), dst / "model.safetensors.index.json", *dst.glob("pytorch_model*.bin"),
            dst / "pytorch_model.bin.index.json", dst / "config.json", *(dst / name for name in TOKENIZER_FILES)]


def check_destination(dst, force):
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise MinineoError(f"{dst}: is a file, and the int8 checkpoint is a directory; nothing was changed "
                           "(name a directory that does not exist yet, or one that holds a checkpoint)")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise MinineoError(f"{dst}: exists and is not empty (pass --force to replace the checkpoint in it)")
    if dst.is_dir():
        # --force replaces files: a directory where one of them goes is something else, never deleted
        for path in checkpoint_files(dst):
            if path.is_dir() and not path.is_symlink():
                raise MinineoError(f"{path}: is a directory where the int8 checkpoint writes a file; "
                                   "nothing was changed (move it away first)")
    return dst


def process_alive(pid):  # is process pid still running? (POSIX and Windows)
    if sys.platform == "win32":
        import ctypes
        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        handle = kernel32.OpenProcess(0x1000, False, pid)   # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return ctypes.get_last_error() == 5   # ERROR_ACCESS_DENIED: it runs, as another user
        try:
            code = ctypes.c_ulong()
            return bool(kernel32.GetExitCodeProcess(handle, ctypes.byref(code))) and code.value == 259   # STILL_ACTIVE
        finally:
            kernel32.CloseHandle(handle)
    try:
        os.kill(pid, 0)   # signal 0 sends nothing: it only asks whether pid exists
    except ProcessLookupError:
        return False
    except PermissionError:   # it runs, as another user
        return True
    return True


STAGING = ".{name}.partial-{pid}"   # the hidden directory beside dst that a run writes into


def remove_dead_staging(dst):
    """Staging directories left beside dst by runs that were killed (SIGKILL, a power cut) are up to a
    model's size each: remove those whose process is gone, and say so. A live one is another run's."""
    prefix = STAGING.format(name=dst.name, pid="")
    for path in sorted(dst.parent.glob(glob.escape(prefix) + "*")) if dst.parent.is_dir() else []:
        pid = path.name[len(prefix):]
        if pid.isdigit() and path.is_dir() and not path.is_symlink() and not process_alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)
            print(f"minineo: removed {path}, left by a quantize that was killed (process {pid} is gone)",
                  file=sys.stderr)


def quantize_checkpoint(src, dst, force=False):
    """Write the int8 checkpoint of float checkpoint src (a directory, a Hub id, 125M / 1.3B / 2.7B, or a
    bundled model's name) to directory dst.

    Everything is written to a hidden directory beside dst and moved into place only when complete,
    so an interruption (Ctrl-C, a kill, a full disk) leaves no half-written model and never loses an
    existing one. --force replaces the checkpoint's own files in dst and leaves any others alone."""
    src, config, files = check_source(src)
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        raise MinineoError(f"{dst}: is the source directory; write the int8 copy somewhere else")
    check_destination(dst, force)
    remove_dead_staging(dst)
    staging = dst.parent / STAGING.format(name=dst.name, pid=os.getpid())
    shutil.rmtree(staging, ignore_errors=True)
    try:
        try:
            staging.mkdir(parents=True)
            write_safetensors(staging / "model.safetensors", int8_tensors(files, expected_shapes(config)),
                              metadata={"format": "pt", "quantization": MARKER["method"]})
            for name in TOKENIZER_FILES:
                if (src / name).is_file():
                    shutil.copyfile(src / name, staging / name)
            raw = json.loads((src / "config.json").read_bytes().decode("utf-8"))   # load_config checked it
            raw["quantization"] = MARKER
            (staging / "config.json").write_text(json.dumps(raw, indent=2))
            move_into_place(staging, dst)
        except OSError as e:   # a read-only folder, a file in dst's path, a full disk
            where = e.filename or staging
            raise MinineoError(f"{dst}: the int8 checkpoint was not written ({where}: {e.strerror or e})") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # gone already when the move succeeded
    return dst


@contextmanager
def ctrl_c_deferred():
    """Ctrl-C inside the block takes effect when it ends. signal.signal works on every OS (a signal
    mask would be POSIX only); Python runs handlers in the main thread only, so elsewhere nothing changes."""
    caught = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    except ValueError:   # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if caught and callable(previous):
            previous(signal.SIGINT, None)   # Python's handler: KeyboardInterrupt, now that the files are whole
        elif caught and previous != signal.SIG_IGN:
            raise KeyboardInterrupt


def move_into_place(staging, dst):  # the complete checkpoint in staging becomes dst's checkpoint
    if not dst.exists():
        os.rename(staging, dst)   # one step on every OS: dst does not exist
        return
    # A Ctrl-C now would leave a mix of old and new files: it waits until every file is in place.
    with ctrl_c_deferred():
        for path in checkpoint_files(dst):
            if not (staging / path.name).exists():
                path.unlink(missing_ok=True)   # an old shard or tokenizer file the new checkpoint lacks
        for path in staging.iterdir():
            os.replace(path, dst / path.name)   # replaces a file on Windows too, unlike os.rename
