"""Measure which way of multiplying is fastest on this CPU, and keep the answer for every later run.

    python -m minineo.calibrate               # with one thread per physical core
    python -m minineo.calibrate --threads 1,2

    python -m minineo.calibrate --show        # what is kept for each thread count: when, and under what load

minineo does this by itself the first time a model multiplies on a CPU model it has not met, and
again at a later run on a quiet machine when the kept measurement ran under load (other programs
busy); run it again after changing the machine's settings. MININEO_CHOICES forces a choice instead
(see minineo/fast/choices.py). It allocates about 1 GB of test matrices and takes 10-15 seconds
per thread count (24 s for 1 and 2 threads on a 2-core Xeon).
"""
import argparse
import dataclasses

from ..fast import choices as chosen
from ..fast.measure import measure
from ..fast.cpu import describe
from ..fast.threads import blas_kernel, physical_cores, set_threads
from .common import Parser, positive_int, run_command


def parse_args(argv):
    parser = Parser(prog="python -m minineo.calibrate", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", help=f"thread counts to measure, comma-separated (default {physical_cores()}; "
                                          "with --show: every count kept)")
    parser.add_argument("--megabytes", type=positive_int, metavar="MB",
                        help="weights to read, in MB (default: twice the L3, at least 256 MiB, at most 1.5 GiB; "
                             "less than the L3 measures the cache, not the memory)")
    parser.add_argument("--show", action="store_true",
                        help="print what is kept for each thread count, measuring nothing")
    args = parser.parse_args(argv)
    if args.threads is None:   # measure one thread per physical core; show every count kept
        args.threads = (args.show and chosen.kept_threads()) or [physical_cores()]
        return args
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        args.threads = []
    if not args.threads or min(args.threads) < 1:
        parser.error(f"--threads: expected a comma-separated list of integers >= 1, got {args.threads!r}")
    return args


def run(args):
    print(f"{describe()}; {blas_kernel()}")
    print(f"kept in {chosen.cache_path()}" + (":" if args.show else ", before measuring again:"))
    for threads in args.threads:
        print(f"  {chosen.describe_kept(threads)}")
        kept = args.show and chosen.read_cached(threads)
        if kept:
            print(f"  {chosen.thread_count(threads)}: {summary(kept, chosen.read_measured(threads))}")
    if args.show:
        return
    for threads in args.threads:
        set_threads(threads)
        choices, measured = measure(threads, args.megabytes and args.megabytes * 10**6)
        chosen.write_cached(threads, choices, measured)
        print(f"{chosen.thread_count(threads)}: {summary(choices, measured)}")
        print(f"  {chosen.describe_kept(threads)}")
    print(f"kept in {chosen.cache_path()}")


def summary(choices, measured):  # one line: the ceiling, whether int8 pays for decode, the choices
    picked = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(choices).items())
    fp32 = measured["ceiling_gb_per_s"] / 4                       # G weights/s at 4 bytes each
    int8 = max(measured["int8_decode_g_weights_per_s"].values())
    return (f"fp32 matrix-vector over {measured['weights_bytes'] / 1e9:.2f} GB: {measured['ceiling_gb_per_s']:.1f} "
            f"GB/s at best ({fp32:.1f} G weights/s); int8 tiles {int8:.1f} G weights/s, so int8 decodes "
            f"{int8 / fp32:.2f}x as fast as fp32 here; chosen: {picked}")


def main(argv=None):
    return run_command(run, parse_args(argv))
