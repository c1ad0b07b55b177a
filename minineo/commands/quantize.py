"""python -m minineo.quantize SRC DST: write an int8 copy of a checkpoint (see minineo/weights/quantize.py)."""
from ..weights.int8_copy import quantize_checkpoint
from .common import Parser, run_command


def run(args):
    dst = quantize_checkpoint(args.src, args.dst, force=args.force)
    size = (dst / "model.safetensors").stat().st_size
    print(f"wrote {dst} ({size / 1e9:.2f} GB of weights, int8 with a float32 scale per row)")


def parser():
    p = Parser(prog="python -m minineo.quantize",
               description="Write an int8 copy of a GPT-Neo checkpoint (one float32 scale per weight row).")
    p.add_argument("src", help="the float checkpoint: a directory (config.json + model.safetensors or "
                   "pytorch_model.bin), a Hub id, 125M / 1.3B / 2.7B, or a bundled model's name")
    p.add_argument("dst", help="the directory to write the int8 checkpoint to")
    p.add_argument("--force", action="store_true",
                   help="replace dst if it already holds a model (it stays intact until the new one is complete)")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))
