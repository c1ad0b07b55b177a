"""Measurement for a design (issue 34, item 2): would a prompt gain from running the MLP half of each
block in row blocks, one per thread, instead of handing only its products to the threads?

In a prompt every token's `x + feed_forward(layer_norm(x))` is its own: rows of x can go to different
threads whole, products (BLAS at one thread each), layer norm, bias, GELU and residual add alike. Today
only the products are shared; the element-wise work between them runs on one core. This script times a
128-token prefill of a random GPT-Neo both ways, same weights, in one process, taking turns:

    python scripts/bench_prefill_rows.py --model 125M --prompt 128 --threads 2 --repeats 9
    OPENBLAS_THREAD_TIMEOUT=4 python scripts/bench_prefill_rows.py ...   # OpenBLAS's idle workers sleep at once
    MININEO_CHOICES=prefill=tiles python scripts/bench_prefill_rows.py ...  # products on minineo's threads

After a product on BLAS's own threads, OpenBLAS's idle workers spin for a while (its THREAD_TIMEOUT) on
the other cores, so minineo's threads, started right after, compete with them: on a busy 2-core Xeon
"mlp rows" ran at 0.46-0.48x of today's speed with the workers spinning, 0.79x with
OPENBLAS_THREAD_TIMEOUT=4, 0.86x with prefill=tiles, and 0.87x on one thread (each of a row block's
products packs the whole weight again; today's tiles pack only their share). Measure on a quiet machine
before reading anything into these.

"today" is minineo's forward as a fast load runs it; "mlp rows" is the same forward written out here
(a copy for measuring, not for reading) with the MLP half split by rows. It prints both medians, their
ratio and the largest difference between their hidden states (float32 rounding only: a product over
fewer rows may take another BLAS kernel). Nothing in minineo changes; if "mlp rows" wins clearly the
model needs one hook (see issue 34's notes) for minineo.fast to pass such a function in.
"""
import argparse
import statistics
import time

import numpy as np

from minineo.commands.bench import checkpoint, default_cache_dir
from minineo.fast.threads import get_threads, parallel_for, set_threads
from minineo.model.attention import self_attention
from minineo.model.embedding import embed
from minineo.model.layer_norm import layer_norm
from minineo.model.mlp import feed_forward
from minineo.weights import load


def plain(params):  # the same nested weights, each TiledWeight unwrapped to its array (1-thread BLAS inside a row block)
    if isinstance(params, dict):
        return {k: plain(v) for k, v in params.items()}
    if isinstance(params, list):
        return [plain(v) for v in params]
    return getattr(params, "w", params)


def forward_mlp_rows(model, ids, rows_per_item):  # [1, T] -> [1, T, d], the MLP half of each block by rows
    config, params = model.config, model.params
    raw = plain(params)
    T = ids.shape[1]
    q_idx, real = np.arange(T), np.ones((1, T), bool)
    x = embed(ids, np.arange(T)[None], params["wte"], params["wpe"])
    for layer, raw_layer, kind in zip(params["blocks"], raw["blocks"], config.attention_layers):
        window = config.window_size if kind == "local" else None
        x = x + self_attention(layer_norm(x, **layer["ln_1"], eps=config.layer_norm_epsilon), **layer["attn"],
                               n_head=config.num_heads, window=window, q_idx=q_idx, real=real, attend=model.attend)
        out = np.empty_like(x)

        def mlp_rows(i, x=x, out=out, raw_layer=raw_layer):
            r = slice(i * rows_per_item, (i + 1) * rows_per_item)
            out[:, r] = x[:, r] + feed_forward(layer_norm(x[:, r], **raw_layer["ln_2"], eps=config.layer_norm_epsilon),
                                               **raw_layer["mlp"])
        parallel_for(-(-T // rows_per_item), mlp_rows)
        x = out
    return layer_norm(x, **params["ln_f"], eps=config.layer_norm_epsilon)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="125M", help="a shape of python -m minineo.bench (its random checkpoint)")
    p.add_argument("--path", help="a checkpoint directory instead")
    p.add_argument("--prompt", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=9)
    p.add_argument("--rows", type=int, default=0, help="rows per item (default: prompt / (2 x threads))")
    args = p.parse_args()
    set_threads(args.threads)
    model = load(args.path or checkpoint(args.model, "fp32", default_cache_dir()))
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, args.prompt))
    rows = args.rows or max(1, -(-args.prompt // (2 * get_threads())))
    ways = {"today": lambda: model.forward(ids), "mlp rows": lambda: forward_mlp_rows(model, ids, rows)}
    outputs = {name: way() for name, way in ways.items()}   # warm-up, and the numbers to compare
    times = {name: [] for name in ways}
    for _ in range(args.repeats):
        for name, way in ways.items():
            start = time.perf_counter()
            way()
            times[name].append(time.perf_counter() - start)
    median = {name: statistics.median(t) for name, t in times.items()}
    for name, seconds in median.items():
        print(f"{args.model}, {args.prompt}-token prefill, {args.threads} threads, {name:9}: {seconds * 1000:7.1f} ms "
              f"({args.prompt / seconds:6.0f} tok/s), median of {args.repeats}")
    print(f"mlp rows / today: {median['today'] / median['mlp rows']:.2f}x the speed; "
          f"max abs difference of the hidden states {np.abs(outputs['today'] - outputs['mlp rows']).max():.2g}")


if __name__ == "__main__":
    main()
