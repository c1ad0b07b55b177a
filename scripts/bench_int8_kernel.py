"""Micro-benchmark: minineo's int8 x @ W.T against fp32 x @ W.T on GPT-Neo-2.7B MLP matrices.

One pass multiplies x by each of 8 matrices in turn, like 4 layers' MLPs (c_fc 10240 x 2560, then
c_proj 2560 x 10240), so every weight comes from memory, not cache. fp32 and int8 passes alternate
within each repetition, so a noisy neighbour slows both alike; medians are reported.

    python scripts/bench_int8_kernel.py                      # decode (M = 1) and prefill (M = 128)
    python scripts/bench_int8_kernel.py --tile-kb 64 128 256 512 1024 --prefill-tile-rows 128 256 512

The fp32 side and the int8 tiles' form use minineo's choices for this CPU (minineo/fast/choices.py;
MININEO_CHOICES forces them); --tile-kb overrides only the int8 tile size. `python -m minineo.calibrate`
makes the same comparison over more candidates, and keeps the winners.
"""
import argparse
import dataclasses
import statistics
import time

import numpy as np

from minineo.fast import choices, int8
from minineo.fast.threads import set_threads
from minineo.fast.tiled import TiledWeight

D, FF = 2560, 10240  # GPT-Neo 2.7B: hidden size, MLP width


def make_matrices(n_layers, seed=0):  # -> fp32 list, int8 list: [FF, D], [D, FF] per layer
    rng = np.random.default_rng(seed)
    fp32 = []
    for _ in range(n_layers):
        fp32 += [rng.standard_normal((FF, D), dtype=np.float32) * np.float32(0.02),
                 rng.standard_normal((D, FF), dtype=np.float32) * np.float32(0.02)]
    return fp32, [int8.quantize(w) for w in fp32]   # plain arrays here; wrapped in main


def one_pass(matrices, xs, matmul):  # seconds to multiply each x by its matrix
    start = time.perf_counter()
    for w, x in zip(matrices, xs):
        matmul(x, w)
    return time.perf_counter() - start


def compare(fp32, q8, m, reps, rng, chosen):  # -> seconds per pass: (fp32 list, int8 list)
    xs = [rng.standard_normal((m, w.shape[1]), dtype=np.float32) for w in fp32]
    times_fp32, times_int8 = [], []
    for _ in range(reps + 1):  # the first repetition warms up (page faults, thread start) and is dropped
        times_fp32.append(one_pass(fp32, xs, lambda x, w: w.matmul_t(x, chosen)))
        times_int8.append(one_pass(q8, xs, lambda x, w: w.matmul_t(x, chosen)))
    return times_fp32[1:], times_int8[1:]


def report(label, work, unit, times_fp32, times_int8):
    """work: bytes or FLOP per pass for (fp32, int8); a noisy neighbour only adds time, so the minimum
    hints at the quiet machine, the median at a typical pass."""
    def summary(work, times):
        median = statistics.median(times)
        return f"{median * 1e3:7.1f} ms (min {min(times) * 1e3:6.1f}) {work / median / 1e9:5.1f} {unit}"

    speedup = statistics.median(times_fp32) / statistics.median(times_int8)
    print(f"{label:<34} fp32 {summary(work[0], times_fp32)} | int8 {summary(work[1], times_int8)} | "
          f"int8 speedup x{speedup:.2f} (of mins x{min(times_fp32) / min(times_int8):.2f})", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--reps", type=int, default=9)
    parser.add_argument("--layers", type=int, default=4, help="MLPs per pass (2 matrices each); 4 = 8 matrices")
    parser.add_argument("--prefill", type=int, default=128, help="rows of x for the prefill case")
    parser.add_argument("--tile-kb", type=int, nargs="*",
                        help="decode tile sizes to try, in KiB of float32 (default: the one chosen for this CPU)")
    parser.add_argument("--prefill-tile-rows", type=int, nargs="*",
                        help="prefill tile heights to try, in rows of the weight (default: the one chosen for this CPU)")
    args = parser.parse_args()

    set_threads(args.threads)
    chosen = choices.current()
    print(f"choices for this CPU with {args.threads} threads: {chosen}")
    fp32, q8 = make_matrices(args.layers)
    fp32 = [TiledWeight(w) for w in fp32]
    rng = np.random.default_rng(1)
    print(f"{len(fp32)} matrices, fp32 {sum(w.nbytes for w in fp32) / 1e9:.2f} GB, "
          f"int8 {sum(w.nbytes for w in q8) / 1e9:.2f} GB; {args.threads} threads; "
          f"median and min of {args.reps} passes, time per pass over all matrices")
    weight_bytes = (sum(w.nbytes for w in fp32), sum(w.nbytes for w in q8))
    for kb in args.tile_kb or [chosen.int8_tile_kib]:
        tiles = dataclasses.replace(chosen, int8_tile_kib=kb)
        rows = "/".join(str(w.tile_rows(1, args.threads, tiles)) for w in q8[:2])
        report(f"decode M=1, tile {kb} KiB ({rows} rows)", weight_bytes, "GB/s of weights",
               *compare(fp32, q8, 1, args.reps, rng, tiles))
    flop = 2 * args.prefill * sum(w.w.size for w in fp32)
    for rows in args.prefill_tile_rows or [chosen.int8_prefill_rows]:
        tiles = dataclasses.replace(chosen, int8_prefill_rows=rows)
        report(f"prefill M={args.prefill}, tile {rows} rows", (flop, flop), "GFLOP/s",
               *compare(fp32, q8, args.prefill, args.reps, rng, tiles))


if __name__ == "__main__":
    main()
