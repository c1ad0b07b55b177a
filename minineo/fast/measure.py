"""The measurement behind choices.py: each way of multiplying, timed on this machine.

Decode reads every weight once per token, so its products are timed over float32 matrices larger
than the last-level cache together (at least twice the L3, at most 1.5 GiB), each taken once per
pass, as a decode step takes them: the best of them is this machine's memory-bandwidth ceiling for
a matrix-vector product. int8 tiles, for each tile size and each way of casting them to float32,
shared by threads or by processes, are timed over a quarter of that memory as int8 (1 byte a weight,
in a temporary file that worker processes map too); prompts over one matrix
with 128 rows of x (int8 prompts for each height of tile); from what size a product pays for the
threads, over rows of those matrices; a 128-token prompt's attention on one thread or with its
heads shared, and its GELU on one thread or shared. Values do not matter for speed, so the matrices
are ones.

A neighbour can only slow a candidate down, never speed it up, so:
- candidates take turns pass by pass (each pass in a new order), and each keeps its best pass: a
  neighbour that comes and goes slows some passes, not the best one of each;
- the float32 decode candidates are timed again at the end: if the ceiling moved by more than
  STEADY in between, the machine changed under the measurement;
- other programs' CPU time is measured throughout (cpu.Neighbours). A measurement during which they
  kept LOADED_CORES or more busy, or whose ceiling moved, is kept marked `under_load` with the reason:
  choices.py uses it, and measures again at the first later run that finds the machine quiet.
"""
import dataclasses
import tempfile
import time

import numpy as np

from .choices import Choices
from .cpu import LOADED_CORES, Neighbours, cache_bytes
from .banded import banded_attention
from .elementwise import gelu_new_rows
from .int8 import Int8Weight
from .processes import available as workers_available, close as close_workers
from .tiled import TiledWeight

ROWS, COLS = 10240, 2560                         # GPT-Neo 2.7B's MLP matrix: 105 MB of float32
MIN_BYTES, MAX_BYTES = 256 * 2**20, 3 * 2**29    # 256 MiB .. 1.5 GiB of weights
PROMPT_ROWS = 128
PASSES = 5
THREADS_FROM = [1 << k for k in range(17, 25)]   # product sizes (weights) timed on 1 thread and on all
WORK_PER_SIZE = 1 << 24                          # weights each size's pass multiplies
NEVER = 1 << 62                                  # a threshold no product reaches: one thread always
# int8 tile sizes (KiB of float32) timed for each cast: through int16 a tile needs a second buffer, half
# its size, and on the 2-core Xeon 2 MiB tiles that way ran at 2.4-4.3 G weights/s against 6.6 direct
INT8_TILES = {"direct": (256, 512, 1024, 2048, 4096), "int16": (256, 512, 1024)}
INT8_PROMPT_ROWS = (64, 128, 256, 512, 1024)     # int8 tile heights timed for a prompt
TILES_MARGIN = 1.05                              # how much faster tiles must be than BLAS's threads to be chosen
ATTENTION_REPEATS = 3                            # q/k/v products and attentions, both shapes, per pass
RECHECK_PASSES = 3                               # passes of the float32 decode candidates again, at the end
STEADY = 0.10         # how far the re-checked ceiling may move from the first before the machine counts as changing


def weights_bytes():  # bytes of test matrices: twice the L3 (where known), within the bounds above
    l3 = cache_bytes()[3] or MIN_BYTES
    return min(max(2 * l3, MIN_BYTES), MAX_BYTES)


def timed_passes(candidates, one_pass, passes=PASSES):  # {label: args} -> {label: its best pass, seconds}
    times = {label: [] for label in candidates}
    order = list(candidates)
    for i in range(passes + 1):                  # the first pass warms up (page faults, thread start)
        for label in order[i % len(order):] + order[:i % len(order)]:   # each pass starts with another one
            started = time.perf_counter()
            one_pass(*candidates[label])
            times[label].append(time.perf_counter() - started)
    return {label: min(t[1:]) for label, t in times.items()}


def measure(threads, nbytes=None):
    """-> (Choices, what was measured): the fastest way of each kind with `threads` threads (set_threads
    must have been called with it), over about nbytes of weights (default weights_bytes())."""
    neighbours = Neighbours()
    nbytes = nbytes or weights_bytes()
    n = -(-nbytes // (ROWS * COLS * 4))
    rows = max(1, min(ROWS, nbytes // (COLS * 4)))      # fewer than 2.7B's only for a small measurement
    fp32 = [np.ones((rows, COLS), np.float32) for _ in range(n)]
    x = np.ones((1, COLS), np.float32)
    nbytes = sum(w.nbytes for w in fp32)

    decode = {"blas": Choices(decode="blas")}
    for form in ("matmul", "dot"):
        for k in ((1,) if threads == 1 else (1, 4, 16)):
            decode[f"tiles {form} x{k}"] = Choices(decode="tiles", tile_form=form, tiles_per_thread=k)
    weights = [TiledWeight(w) for w in fp32]

    def fp32_pass(choices):
        for w in weights:
            w.matmul_t(x, choices)
    first = timed_passes({label: (c,) for label, c in decode.items()}, fp32_pass)
    # the tiles that the int8 weights and the thresholds below are measured with
    best_tiles = decode[min((label for label in first if label != "blas"), key=first.get)]

    # int8 weights as 2.7B's two MLP shapes, [4 x 10240, 2560] and [10240, 10240], mapped from a file as
    # a checkpoint's are (worker processes map the same file): a quarter of the float32 bytes, since a
    # tile's cast, not the memory, bounds int8, and the candidates take turns
    scratch = int8_file(-(-n // 4) * rows * COLS * 4)
    q8 = np.memmap(scratch.name, dtype=np.int8, mode="r").reshape(-1, rows, COLS * 4)
    int8 = [Int8Weight(q, np.ones(len(q), np.float32))
            for q in (np.asarray(m).reshape(-1, COLS * (1 + 3 * (i % 2))) for i, m in enumerate(q8))]
    xs = {w.shape[1]: np.ones((1, w.shape[1]), np.float32) for w in int8}
    tiles = {f"{workers} {cast} {kib} KiB": dataclasses.replace(best_tiles, int8_cast=cast, int8_tile_kib=kib,
                                                                int8_workers=workers)
             for workers in (("threads", "processes") if threads > 1 and workers_available() else ("threads",))
             for cast, sizes in INT8_TILES.items() for kib in sizes}

    def int8_pass(choices):
        for w in int8:
            w.matmul_t(xs[w.shape[1]], choices)
    seconds = timed_passes({label: (c,) for label, c in tiles.items()}, int8_pass)
    int8_weights = sum(w.q.size for w in int8)
    int8_gws = {label: int8_weights / s / 1e9 for label, s in seconds.items()}
    best_int8 = tiles[max(int8_gws, key=int8_gws.get)]

    fp32_from = threads_from([w.w for w in weights], TiledWeight, best_tiles, "fp32_threads_from", threads)
    int8_from = threads_from([w.q for w in int8 if w.shape[1] == COLS],
                             lambda q: Int8Weight(q, np.ones(len(q), np.float32)), best_int8, "int8_threads_from", threads)

    prompt = np.ones((PROMPT_ROWS, COLS), np.float32)
    flop = 2 * PROMPT_ROWS * weights[0].w.size
    prefill = {"blas": Choices(prefill="blas"), "tiles": dataclasses.replace(best_tiles, prefill="tiles")}
    seconds = timed_passes({label: (c,) for label, c in prefill.items()},
                           lambda choices: weights[0].matmul_t(prompt, choices), passes=3)
    gflops = {label: flop / s / 1e9 for label, s in seconds.items()}

    # int8 prompt tiles: each height, cast either way (a tall tile outgrows L2, where the casts compare
    # otherwise than in a decode tile)
    square = Int8Weight(int8[0].q[:ROWS], int8[0].scale[:ROWS])        # 2.7B's c_fc shape, as int8
    prompt_tiles = {f"{rows} {cast}": dataclasses.replace(best_int8, int8_prefill_rows=rows, int8_prefill_cast=cast)
                    for cast in INT8_TILES for rows in INT8_PROMPT_ROWS}
    seconds = timed_passes({label: (c,) for label, c in prompt_tiles.items()},
                           lambda choices: square.matmul_t(prompt, choices), passes=3)
    int8_gflops = {label: 2 * PROMPT_ROWS * square.q.size / s / 1e9 for label, s in seconds.items()}
    best_prompt = prompt_tiles[max(int8_gflops, key=int8_gflops.get)]

    # A prompt's attention, 128 queries over their 128 keys with 125M's heads (12 of 64) and 2.7B's (20 of
    # 128): on one thread, or its heads shared by the threads. Each right after its q/k/v product, taken
    # the way just chosen, as in a model: after a product on BLAS's threads, OpenBLAS's idle workers spin
    # for a while on the other cores, and minineo's threads would compete with them (on the busy 2-core
    # Xeon the rows of a training step's exp, shared that way, gained nothing; with the workers made to
    # sleep at once, OPENBLAS_THREAD_TIMEOUT=4, they gained 10% of the head). The product is 125M's
    # q/k/v for both (2.7B's would take seconds: any product on BLAS's threads leaves them spinning).
    prefill_way = max(gflops, key=gflops.get)
    qkv, small_prompt = TiledWeight(np.ones((3 * 768, 768), np.float32)), np.ones((PROMPT_ROWS, 768), np.float32)

    def one_or_shared(choices, field, shared, inputs, step):
        """-> (the way kept for `field`, each way's ms a repeat): step(input, choices) for every input, each
        right after the q/k/v product, with `field` "one" and (given threads) `shared`. Shared only where it
        clearly wins: a parallel region also wakes a sleeping pool in a model."""
        ways = {way: dataclasses.replace(choices, **{field: way})
                for way in (("one", shared) if threads > 1 else ("one",))}

        def one_pass(chosen):
            for _ in range(ATTENTION_REPEATS):
                for item in inputs:
                    qkv.matmul_t(small_prompt, chosen)
                    step(item, chosen)
        seconds = timed_passes({way: (c,) for way, c in ways.items()}, one_pass)
        kept = shared if seconds.get(shared, float("inf")) * TILES_MARGIN < seconds["one"] else "one"
        return kept, {way: 1000 * t / ATTENTION_REPEATS for way, t in seconds.items()}

    heads = [np.ones((1, h, PROMPT_ROWS, hd), np.float32) for h, hd in ((12, 64), (20, 128))]
    idx, real = np.arange(PROMPT_ROWS), np.ones((1, PROMPT_ROWS), bool)
    prompt_attention, attention_ms = one_or_shared(
        dataclasses.replace(best_tiles, prefill=prefill_way), "prompt_attention", "heads", heads,
        lambda q, chosen: banded_attention(q, q, q, idx, idx, real, choices=chosen))
    # A prompt's GELU over 125M's and 2.7B's MLP widths, in blocks on one thread or shared, after the same
    # product (the same spinning workers meet it in a model).
    pre = [np.ones((PROMPT_ROWS, width), np.float32) for width in (3072, 4 * COLS)]
    prompt_elementwise, gelu_ms = one_or_shared(
        dataclasses.replace(best_tiles, prefill=prefill_way, prompt_attention=prompt_attention),
        "prompt_elementwise", "rows", pre, gelu_new_rows)

    # The ceiling again, now that everything else ran: it tells whether the machine stayed as it was.
    again = timed_passes({label: (c,) for label, c in decode.items()}, fp32_pass, passes=RECHECK_PASSES)
    gbps = {label: nbytes / min(first[label], again[label]) / 1e9 for label in decode}
    best_decode = decode[max(gbps, key=gbps.get)]
    if gbps["blas"] * TILES_MARGIN > max(gbps.values()):
        # Timed back to back, tiles look better than they do in a model, where the pool's threads have
        # slept between products: on the 2-core Xeon tiles at 30.2 GB/s against BLAS's 29.8 here
        # decoded 2.7B 7% slower (2.09 against 2.25 tok/s). So BLAS's own threads, NumPy's plain
        # product, unless the tiles clearly win.
        best_decode = decode["blas"]

    close_workers()   # they mapped the scratch file
    scratch.close()
    choices = dataclasses.replace(best_decode, tile_form=best_tiles.tile_form,
                                  tiles_per_thread=best_tiles.tiles_per_thread, int8_tile_kib=best_int8.int8_tile_kib,
                                  int8_cast=best_int8.int8_cast, int8_workers=best_int8.int8_workers, prefill=prefill_way,
                                  int8_prefill_rows=best_prompt.int8_prefill_rows,
                                  int8_prefill_cast=best_prompt.int8_prefill_cast,
                                  fp32_threads_from=fp32_from["chosen"], int8_threads_from=int8_from["chosen"],
                                  prompt_attention=prompt_attention, prompt_elementwise=prompt_elementwise)
    measured = {"weights_bytes": nbytes, "ceiling_gb_per_s": max(gbps.values()),
                "fp32_decode_gb_per_s": gbps, "int8_decode_g_weights_per_s": int8_gws,
                "prefill_gflop_per_s": gflops, "int8_prefill_gflop_per_s": int8_gflops,
                "fp32_threads_from": fp32_from, "int8_threads_from": int8_from,
                "prompt_qkv_and_attention_ms": attention_ms, "prompt_qkv_and_gelu_ms": gelu_ms,
                "load": load(neighbours.read(), nbytes / min(first.values()) / 1e9,
                             nbytes / min(again.values()) / 1e9)}
    return choices, measured


def int8_file(nbytes, chunk=1 << 24):  # -> a temporary file of nbytes of int8 ones, removed when closed
    scratch = tempfile.NamedTemporaryFile(prefix="minineo-calibrate-", suffix=".int8")
    ones = np.ones(chunk, np.int8)
    for start in range(0, nbytes, chunk):   # written, not a sparse file: its pages must be real ones to read
        scratch.write(ones[:min(chunk, nbytes - start)].tobytes())
    scratch.flush()
    return scratch


def load(neighbours, ceiling, recheck):
    """-> what ran beside the measurement: cpu.Neighbours' reading, the ceiling at the start and at the
    end (GB/s), and under_load: why the measurement cannot be trusted on a quiet machine, or None."""
    others, moved = neighbours["others_cores"], abs(recheck / ceiling - 1)
    reasons = ([f"other programs kept {others:.2f} cores busy"] if others is not None and others >= LOADED_CORES
               else []) + ([f"the bandwidth ceiling moved {moved:.0%} while measuring ({ceiling:.1f} GB/s at the "
                            f"start, {recheck:.1f} at the end)"] if moved > STEADY else [])
    return {**neighbours, "ceiling_gb_per_s": [ceiling, recheck], "under_load": "; ".join(reasons) or None}


def threads_from(matrices, weight, choices, field, threads):
    """-> {"chosen": the least weights (one row of x) from which a product shared by the threads beat one
    thread, at that size and every larger one measured, else the largest size measured; "seconds": each
    size's times}. Products of
    each size are taken over fresh rows of `matrices` (views, no copy), as a decode step meets them."""
    never, always = (dataclasses.replace(choices, **{field: n}) for n in (NEVER, 1))
    x = np.ones((1, COLS), np.float32)
    candidates, sizes = {}, []
    for size in THREADS_FROM if threads > 1 else []:   # one thread: nothing to share, keep the default
        rows = max(1, size // COLS)
        views = [weight(m[r:r + rows]) for m in matrices for r in range(0, len(m) - rows + 1, rows)]
        if views:   # a small measurement (--megabytes) has no room for the largest sizes
            views = views[:max(1, WORK_PER_SIZE // size)]
            candidates[size, "1 thread"], candidates[size, "threads"] = (views, x, never), (views, x, always)
            sizes.append(size)
    if not sizes:   # one thread, or no room to measure
        return {"chosen": getattr(Choices(), field), "seconds": {}}

    def one_pass(views, x, chosen):
        for w in views:
            w.matmul_t(x, chosen)
    seconds = timed_passes(candidates, one_pass)
    wins = [seconds[size, "threads"] < seconds[size, "1 thread"] for size in sizes]
    # Where threads never won, products from the largest size timed on are still shared: these sizes are
    # read from the cache pass after pass, where a decode step reads its larger matrices (2.7B's LM head:
    # 129 M weights) from memory, and there two threads pay (quiet Xeon, 2.7B int8 decode: 1.26 tok/s
    # with one thread for every int8 product, 1.81 from 2^24 weights, 2.06 from 2^21).
    chosen = next((size for i, size in enumerate(sizes) if all(wins[i:])), sizes[-1])
    return {"chosen": chosen, "seconds": {f"{size} {mode}": t for (size, mode), t in seconds.items()}}
