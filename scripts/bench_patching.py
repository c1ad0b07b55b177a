"""Time one activation-patching grid three ways, in one run: minineo's patch_grid, transformers with
torch forward hooks, and TransformerLens's own patching.

    python scripts/bench_patching.py [--shape 125M|tiny] [--tokens 20] [--repeats 5] [--threads 2]

The grid: GPT-Neo 125M's shape with random weights (written once to a temporary directory by
minineo.weights.random_checkpoint, and loaded from there by all three), a clean and a corrupted prompt
of --tokens tokens (the corrupted one has its first half drawn again), and the [layer, position]
grid of a logit difference at the last position with the clean run's `resid_pre` (the stream
entering a block) patched into the corrupted run, one (layer, position) at a time:
- minineo: `minineo.interpret.patch_grid(..., what="resid_pre")`: each patched run resumes at the
  patched layer from the corrupted stream, and one layer's patches run as one batch;
- transformers: `GPTNeoForCausalLM`, one forward of the whole model per (layer, position), a forward
  pre-hook on block l that writes the clean run's `hidden_states[l]` (block l's input) at position t;
- TransformerLens 4.3: `TransformerBridge.boot_transformers(DIR)` and
  `transformer_lens.patching.get_act_patch_resid_pre` (one forward per (layer, position) too).
Each timing covers the whole grid, the clean and corrupted runs it needs included, with the same
threads for all (torch.set_num_threads and minineo.set_threads), median of --repeats. The grids are
compared (max abs difference). Needs torch, transformers and transformer-lens (the test oracles).
"""
import argparse
from importlib.metadata import version
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TQDM_DISABLE", "1")   # TransformerLens's patching draws a progress bar per grid

import minineo  # noqa: E402
from minineo.fast.threads import get_threads  # noqa: E402
from minineo.interpret import patch_grid  # noqa: E402
from minineo.model.config import PRESETS  # noqa: E402
from minineo.weights.random_checkpoint import write_random_checkpoint  # noqa: E402

SHAPES = {
    "125M": PRESETS["125M"],
    "tiny": replace(PRESETS["125M"], vocab_size=500, hidden_size=32, num_layers=4, num_heads=4,   # seconds, for the test
                    intermediate_size=128, window_size=4, attention_layers=("global", "local") * 2,
                    max_position_embeddings=64, eos_token_id=499),
}


SCALES = {"125M": 0.02, "tiny": 0.3}   # the weights' spread: 125M's initialiser; tiny's larger, so its grid is not all ~0


def prompts(config, tokens, seed=0):  # -> clean [T], corrupted [T]: the corrupted one's first half drawn again
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, config.vocab_size, tokens)
    corrupted = clean.copy()
    corrupted[: tokens // 2] = rng.integers(0, config.vocab_size, tokens // 2)
    return clean, corrupted


def answers(model, clean, corrupted):  # the clean run's top token at the last position, and the corrupted run's
    good, bad = int(model(clean)[-1].argmax()), int(model(corrupted)[-1].argmax())
    if good == bad:   # a logit difference of a token with itself is 0 everywhere: take the clean run's second
        bad = int(np.argsort(-model(clean)[-1])[1])
    return good, bad


def minineo_grid(model, clean, corrupted, good, bad):  # -> [L, T]
    return patch_grid(model, clean, corrupted, lambda logits: logits[-1, good] - logits[-1, bad], what="resid_pre")


def torch_hooks_grid(hf, clean, corrupted, good, bad):  # -> [L, T]: one whole forward per (layer, position)
    import torch
    with torch.no_grad():
        clean_states = hf(torch.tensor(clean)[None], output_hidden_states=True).hidden_states   # [i]: block i's input
        blocks = hf.transformer.h
        grid = np.empty((len(blocks), len(clean)))
        corrupted_ids = torch.tensor(corrupted)[None]
        for layer, block in enumerate(blocks):
            for t in range(len(clean)):
                def patch(module, args, kwargs, layer=layer, t=t):
                    x = (args[0] if args else kwargs["hidden_states"]).clone()
                    x[:, t] = clean_states[layer][:, t]
                    return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})
                handle = block.register_forward_pre_hook(patch, with_kwargs=True)
                try:
                    logits = hf(corrupted_ids).logits[0]
                finally:
                    handle.remove()
                grid[layer, t] = float(logits[-1, good] - logits[-1, bad])
    return grid


def transformer_lens_grid(bridge, clean, corrupted, good, bad):  # -> [L, T], with TransformerLens's own patching
    import torch
    from transformer_lens.patching import get_act_patch_resid_pre
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(torch.tensor(clean)[None])
        grid = get_act_patch_resid_pre(bridge, torch.tensor(corrupted)[None], clean_cache,
                                       lambda logits: logits[0, -1, good] - logits[0, -1, bad])
    return grid.detach().float().numpy()


def load_all(directory):  # -> {engine: model}, each loaded once from the same checkpoint
    import torch
    import transformers
    from transformer_lens.model_bridge import TransformerBridge
    hf = transformers.GPTNeoForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()
    bridge = TransformerBridge.boot_transformers(str(directory), device="cpu")
    bridge.eval()
    return {"minineo": minineo.load(directory), "transformers + torch hooks": hf, "TransformerLens": bridge}


GRIDS = {"minineo": minineo_grid, "transformers + torch hooks": torch_hooks_grid, "TransformerLens": transformer_lens_grid}


def measure(models, clean, corrupted, good, bad, repeats):  # -> {engine: (median seconds, all seconds, grid)}
    results = {}
    for engine, grid_of in GRIDS.items():
        times, grid = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            grid = grid_of(models[engine], clean, corrupted, good, bad)
            times.append(time.perf_counter() - start)
        results[engine] = statistics.median(times), times, grid
    return results


def cpu_name():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or platform.machine()


def table(results, reference="minineo"):  # -> the lines of a markdown table
    base = results[reference][2]
    lines = ["| engine | median s | each run, s | x minineo's time | max abs diff from minineo's grid |",
             "|---|---|---|---|---|"]
    for engine, (median, times, grid) in results.items():
        lines.append(f"| {engine} | {median:.3f} | {', '.join(f'{t:.3f}' for t in times)} | "
                     f"{median / results[reference][0]:.2f} | {np.abs(grid - base).max():.1e} |")
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", choices=SHAPES, default="125M")
    p.add_argument("--tokens", type=int, default=20, help="prompt length T (the grid is [layers, T])")
    p.add_argument("--repeats", type=int, default=5, help="timed grids per engine; the median is reported")
    p.add_argument("--threads", type=int, default=2, help="threads for torch and for minineo alike")
    args = p.parse_args(argv)

    import torch
    import transformers
    minineo.set_threads(args.threads)
    torch.set_num_threads(args.threads)
    config = SHAPES[args.shape]
    clean, corrupted = prompts(config, args.tokens)
    with tempfile.TemporaryDirectory() as work:   # kept while the models run: loaders may map the file
        models = load_all(write_random_checkpoint(Path(work) / args.shape, config, scale=SCALES[args.shape]))
        good, bad = answers(models["minineo"], clean, corrupted)
        for engine, grid_of in GRIDS.items():   # one untimed grid each: first-call costs (allocation, lazy imports)
            grid_of(models[engine], clean, corrupted, good, bad)
        results = measure(models, clean, corrupted, good, bad, args.repeats)

    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs; OPENBLAS_CORETYPE "
          f"{os.environ['OPENBLAS_CORETYPE'] if 'OPENBLAS_CORETYPE' in os.environ else 'not set'}")
    print(f"threads: torch {torch.get_num_threads()}, minineo {get_threads()}; numpy {np.__version__}, "
          f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"transformer-lens {version('transformer-lens')}")
    print(f"grid: {args.shape} ({config.num_layers} layers, d = {config.hidden_size}), resid_pre [layer, position] over "
          f"{args.tokens} tokens = {config.num_layers * args.tokens} patched runs; metric: logit[{good}] - logit[{bad}] "
          f"at the last position; median of {args.repeats}")
    print("\n".join(table(results)))
    diffs = [np.abs(results[a][2] - results[b][2]).max() for a in GRIDS for b in GRIDS if a < b]
    print(f"largest difference between any two grids: {max(diffs):.1e} (the metric's range: "
          f"{np.ptp(results['minineo'][2]):.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
