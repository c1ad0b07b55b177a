"""Write an int8 copy of a checkpoint, once, so that loading it needs neither the float32 file nor
the time to quantize it:

    python -m minineo.quantize SRC DST [--force]      (the command: minineo/commands/quantize.py)

Every weight matrix except wpe (the same ones as `minineo.load(SRC, int8=True)`) is stored as int8
under its Hub name, with a float32 `<name>_scale` [out] beside it: W ~= q * scale[:, None].
Norms, biases and wpe stay float32. `minineo.load(DST)` maps the file, so the weights cost 1 byte
each in memory and only the pages the model touches are read.

The source is read one tensor at a time, by file reads rather than a mapping, and the destination
is written one tensor at a time: converting the 10.6 GB GPT-Neo 2.7B needs about one tensor of
memory (wte, 0.5 GB), not the whole model.
"""
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np

from ..errors import MinineoError
from .checkpoint import SCALE_SUFFIX, check_tensors, expected_shapes, quantize_rows
from .config import load_config
from .safetensors_io import write_safetensors
from .shards import open_checkpoint

MARKER = {"method": "minineo-int8-rowwise", "bits": 8}   # added to config.json as "quantization"
KEPT_FLOAT = ("transformer.wpe.weight",)                # read by position, never multiplied
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json")


def is_quantized(name, shape):
    return len(shape) == 2 and name not in KEPT_FLOAT


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
    src = Path(src)
    if not src.is_dir():
        raise MinineoError(f"{src}: no such model directory")
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
    return config, files


def check_destination(dst, force):
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise MinineoError(f"{dst}: exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not force:
        raise MinineoError(f"{dst}: exists and is not empty (pass --force to replace the checkpoint in it)")
    return dst


def quantize_checkpoint(src, dst, force=False):
    """Write the int8 checkpoint of the float checkpoint in directory src to directory dst.

    Everything is written to a hidden directory beside dst and moved into place only when complete,
    so an interruption (Ctrl-C, a kill, a full disk) leaves no half-written model and never loses an
    existing one. --force replaces the checkpoint's own files in dst and leaves any others alone."""
    src = Path(src)
    config, files = check_source(src)
    dst = Path(dst)
    if dst.resolve() == src.resolve():
        raise MinineoError(f"{dst}: is the source directory; write the int8 copy somewhere else")
    check_destination(dst, force)
    staging = dst.parent / f".{dst.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
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
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # gone already when the move succeeded
    return dst


def move_into_place(staging, dst):  # the complete checkpoint in staging becomes dst's checkpoint
    if not dst.exists():
        os.rename(staging, dst)   # atomic
        return
    # A Ctrl-C now would leave a mix of old and new files: it waits until every file is in place.
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        stale = [*dst.glob("model*.safetensors"), dst / "model.safetensors.index.json",
                 *dst.glob("pytorch_model*.bin"), dst / "pytorch_model.bin.index.json",
                 *(dst / name for name in TOKENIZER_FILES)]
        for path in stale:
            if not (staging / path.name).exists():
                path.unlink(missing_ok=True)   # an old shard or tokenizer file the new checkpoint lacks
        for path in staging.iterdir():
            os.replace(path, dst / path.name)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
