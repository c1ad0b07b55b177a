"""Write an int8 copy of a checkpoint, once, so that loading it needs neither the float32 file nor
the time to quantize it:

    python -m minineo.quantize SRC DST [--force]

Every weight matrix except wpe (the same ones as `minineo.load(SRC, int8=True)`) is stored as int8
under its Hub name, with a float32 `<name>_scale` [out] beside it: W ~= q * scale[:, None].
Norms, biases and wpe stay float32. `minineo.load(DST)` maps the file, so the weights cost 1 byte
each in memory and only the pages the model touches are read.

The source is read one tensor at a time, by file reads rather than a mapping, and the destination
is written one tensor at a time: converting the 10.6 GB GPT-Neo 2.7B needs about one tensor of
memory (wte, 0.5 GB), not the whole model.
"""
import argparse
import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np

from .checkpoint import SCALE_SUFFIX, _check, expected_shapes, quantize_rows
from .config import load_config
from .errors import MinineoError
from .safetensors_io import open_shards, write_safetensors

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
        return files[name].float32(name, copy=True)

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
    if "quantization" in json.loads(config_path.read_text()):
        raise MinineoError(f"{src}: already quantized (config.json has 'quantization'); "
                           "pass the float checkpoint it was made from")
    files = open_shards(src)
    int8 = sorted(name for name in files if files[name].dtype(name) == "I8")
    if int8:
        raise MinineoError(f"{src}: already holds int8 tensors ({int8[0]}, ...); "
                           "pass the float checkpoint it was made from")
    _check(files, config, src)
    return config, files


def check_destination(dst, force):
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise MinineoError(f"{dst}: exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()):
        if not force:
            raise MinineoError(f"{dst}: exists and is not empty (pass --force to overwrite it)")
        for name in ["config.json", "model.safetensors", "model.safetensors.index.json", *TOKENIZER_FILES]:
            (dst / name).unlink(missing_ok=True)
        for shard in dst.glob("model-*-of-*.safetensors"):
            shard.unlink()
    dst.mkdir(parents=True, exist_ok=True)
    return dst


def quantize_checkpoint(src, dst, force=False):
    """Write the int8 checkpoint of the float checkpoint in directory src to directory dst."""
    src = Path(src)
    config, files = check_source(src)
    if Path(dst).resolve() == src.resolve():
        raise MinineoError(f"{dst}: is the source directory; write the int8 copy somewhere else")
    dst = check_destination(dst, force)
    tensors = int8_tensors(files, expected_shapes(config))
    partial = dst / "model.safetensors.partial"   # renamed when complete: no half-written model.safetensors
    write_safetensors(partial, tensors, metadata={"format": "pt", "quantization": MARKER["method"]})
    os.replace(partial, dst / "model.safetensors")
    for name in TOKENIZER_FILES:
        if (src / name).exists():
            shutil.copyfile(src / name, dst / name)
    raw = json.loads((src / "config.json").read_text())
    raw["quantization"] = MARKER
    (dst / "config.json").write_text(json.dumps(raw, indent=2))
    return dst


def main(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m minineo.quantize",
        description="Write an int8 copy of a GPT-Neo checkpoint (one float32 scale per weight row).")
    parser.add_argument("src", help="the float checkpoint directory (config.json + model.safetensors)")
    parser.add_argument("dst", help="the directory to write the int8 checkpoint to")
    parser.add_argument("--force", action="store_true", help="overwrite dst if it is not empty")
    args = parser.parse_args(argv)
    try:
        dst = quantize_checkpoint(args.src, args.dst, force=args.force)
    except MinineoError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    size = (dst / "model.safetensors").stat().st_size
    print(f"wrote {dst} ({size / 1e9:.2f} GB of weights, int8 with a float32 scale per row)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
