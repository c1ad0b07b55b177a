"""How fast minineo trains, against the same GPT-Neo trained by PyTorch on the CPU with the same threads.

    python -m minineo.train.bench [--threads 2] [--steps 5] [--shape small|tiny|SPEC]

A step is what `python -m minineo.train` does per step: the loss and every gradient of a batch
of random windows, clipping by the global norm, and AdamW (PyTorch: model(ids, labels=ids).loss,
.backward(), clip_grad_norm_, AdamW, dropout off). Each engine runs in a fresh process, so that
PyTorch's OpenMP threads and NumPy's BLAS threads never share a core at once and each process's
peak memory is its own; the engines take turns, step time is the median over --steps steps after
one warm-up step, "step memory" is the peak resident memory a step adds to the model and optimizer.
For minineo it also says where a step's time goes.
"""
import cProfile
import mmap
import multiprocessing
import pstats
import statistics
import time

import numpy as np

from .common import Parser, peak_memory, positive_int, run_command
from ..errors import MinineoError
from ..fast.choices import thread_count
from ..fast.cpu import cpu_name
from ..fast.threads import physical_cores
from ..train.loop import model_config

# layers, width, heads, window, context, batch: "small" is about 10 M weights (6.4 M of them the
# embedding of GPT-2's 50,257 tokens), "tiny" the model that must learn within a minute on 2 cores.
SHAPES = {"tiny": (2, 64, 4, 16, 64, 8), "small": (4, 128, 4, 32, 128, 8)}
VOCAB = 50257
PARTS = {("backward.py", "block_forward"): "blocks forward", ("backward.py", "block_backward"): "blocks backward",
         ("grads.py", "head_and_loss"): "LM head + cross-entropy (both ways)",
         ("backward.py", "embed_backward"): "embedding backward", ("embedding.py", "embed"): "embedding forward",
         ("optim.py", "step"): "AdamW", ("optim.py", "clip_by_global_norm"): "clipping"}


def rss_bytes():  # the resident memory now (Linux's /proc; the bench's step memory is measured there)
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * mmap.PAGESIZE


def minineo_steps(shape, threads, steps, seed=0):  # -> seconds per step, step memory, {part: seconds per step}
    from threadpoolctl import ThreadpoolController
    ThreadpoolController().limit(limits=threads, user_api="blas")
    from ..train.grads import hub_named, loss_and_param_grads
    from ..train.loop import init_params
    from ..train.optim import AdamW, clip_by_global_norm
    layers, width, heads, window, context, batch = shape
    config = model_config(VOCAB, layers, width, heads, window, context, VOCAB - 1)
    params = init_params(config, seed)
    weights = hub_named(params)
    optimizer = AdamW(weights, (0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(seed)

    def step():
        loss, grads = loss_and_param_grads(params, config, rng.integers(0, VOCAB, (batch, context)))
        grads = hub_named(grads)
        clip_by_global_norm(grads, 1.0)
        optimizer.step(weights, grads, 1e-4)

    step()
    before = rss_bytes()
    times, profile = [], cProfile.Profile()
    for _ in range(steps):
        start = time.perf_counter()
        profile.enable()
        step()
        profile.disable()
        times.append(time.perf_counter() - start)
    stats = pstats.Stats(profile).stats   # {(file, line, name): (calls, ..., tottime, cumtime, callers)}
    parts = {}
    for (path, _, name), (_, _, _, cumtime, callers) in stats.items():
        part = PARTS.get((path.rsplit("/", 1)[-1], name)) if "minineo" in path else None
        if part:
            parts[part] = parts.get(part, 0) + cumtime / steps
    return statistics.median(times), peak_memory() - before, parts


def torch_steps(shape, threads, steps, seed=0):
    import torch
    import transformers
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    layers, width, heads, window, context, batch = shape
    config = transformers.GPTNeoConfig(
        vocab_size=VOCAB, hidden_size=width, num_layers=layers, num_heads=heads, window_size=window,
        attention_types=[[["global", "local"], layers // 2]] if layers % 2 == 0 else [[["global"], layers]],
        max_position_embeddings=context, embed_dropout=0.0, attention_dropout=0.0, resid_dropout=0.0)
    model = transformers.GPTNeoForCausalLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(seed)

    def step():
        ids = torch.from_numpy(rng.integers(0, VOCAB, (batch, context)))
        model(ids, labels=ids).loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    before = rss_bytes()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return statistics.median(times), peak_memory() - before, {}


ENGINES = {"minineo": minineo_steps, "pytorch": torch_steps}


def measure(shape, threads=None, steps=5, rounds=1):  # -> {engine: (seconds per step, step memory, parts)}
    threads = threads or physical_cores()
    spawn = multiprocessing.get_context("spawn")   # a fresh interpreter per measurement
    results = {engine: [] for engine in ENGINES}
    for _ in range(rounds):   # taking turns: a machine that gets busier slows both alike
        for engine, run in ENGINES.items():
            with spawn.Pool(1) as pool:
                results[engine].append(pool.apply(run, (shape, threads, steps)))
    return {engine: min(runs, key=lambda r: r[0]) for engine, runs in results.items()}


def report(shape, threads, results):
    layers, width, heads, window, context, batch = shape
    lines = [f"training step, GPT-Neo {layers} layers x {width} wide, {heads} heads, window {window}, "
             f"vocabulary {VOCAB}, batch {batch} x {context} tokens; {cpu_name()}, {thread_count(threads)}"]
    for engine, (seconds, memory, _) in results.items():
        lines.append(f"  {engine:8} {seconds * 1000:8.1f} ms/step  {batch * context / seconds:8.0f} tokens/s  "
                     f"step memory {memory / 2**20:7.1f} MiB")
    ratio = results["pytorch"][0] / results["minineo"][0]
    lines.append(f"  minineo runs at {ratio:.2f}x PyTorch's speed")
    parts = results["minineo"][2]
    total = sum(parts.values())
    lines.append("  where minineo's step goes (profiled): " + ", ".join(
        f"{name} {seconds / total:.0%}" for name, seconds in sorted(parts.items(), key=lambda p: -p[1])))
    return "\n".join(lines)


def parse_shape(text):
    if text in SHAPES:
        return SHAPES[text]
    try:
        shape = tuple(int(n) for n in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 6 or min(shape) < 1:
        raise MinineoError(f"--shape: expected {' or '.join(SHAPES)} or six integers layers,width,heads,window,"
                           f"context,batch, got {text!r}")
    return shape


def run(args):
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError:
        raise MinineoError("the training bench compares with PyTorch: pip install torch transformers") from None
    for name in args.shape.split(";"):
        shape = parse_shape(name)
        print(report(shape, args.threads or physical_cores(), measure(shape, args.threads, args.steps, args.rounds)),
              flush=True)


def parser():
    p = Parser(prog="python -m minineo.train.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shape", default="tiny;small", help="tiny, small, or layers,width,heads,window,context,batch; "
                   "several joined by ';' (default tiny;small)")
    p.add_argument("-t", "--threads", type=positive_int, help="threads for both engines (default: physical cores)")
    p.add_argument("--steps", type=positive_int, default=5, help="timed steps per run (default 5)")
    p.add_argument("--rounds", type=positive_int, default=1, help="runs per engine, taking turns; the fastest counts")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))

