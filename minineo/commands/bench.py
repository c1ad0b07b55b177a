"""How fast minineo runs GPT-Neo on this machine, and how that compares with transformers + PyTorch.

    python -m minineo.bench --model 2.7B --dtype fp32,int8 --compare transformers --out bench.md

The weights are random, written with NumPy alone in the released models' shapes and cached under
~/.cache/minineo/bench/<shape>-<dtype> (int8 through `python -m minineo.quantize`), so the
benchmark needs no download and no PyTorch. Speed does not depend on the weights' values.

Every run of every configuration (model shape x engine x dtype) is a fresh Python process, so that
its peak resident memory (ru_maxrss) is its own, and the configurations take turns run by run, so
that a machine that gets busier or quieter meanwhile slows them all alike. In each process:
- load: the time to open the checkpoint (after the first run, from the page cache);
- prefill: one forward pass over a prompt of P random tokens into an empty KV cache, with logits
  for the last position only, as generation needs; P / seconds;
- decode: after the first prompt, --new-tokens greedy steps of one token each, with the KV cache;
  only the steps are timed; tokens / seconds;
after one untimed warm-up that reads every weight once. The table gives the median over --runs
processes of each figure, and the largest peak memory.
"""
import argparse
import importlib.util
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..weights.config import PRESETS, Config
from ..errors import MinineoError
from .common import Parser, run_command

TINY = Config(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
              window_size=16, attention_layers=("global", "local"), max_position_embeddings=2048,
              eos_token_id=511)
SHAPES = {**PRESETS, "tiny": TINY}   # "tiny" is for the tests: seconds, not minutes
SEED = 0
ENGINES = ("minineo", "transformers")


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "minineo" / "bench"


# --- the checkpoints ------------------------------------------------------------------------------

def checkpoint(shape, dtype, cache_dir):
    """The directory of the random checkpoint of this shape and dtype, written on first use."""
    from ..weights.quantize import quantize_checkpoint
    from ..weights.random_checkpoint import write_random_checkpoint

    directory = Path(cache_dir) / f"{shape}-{dtype}"
    if directory.is_dir():
        return directory
    partial = directory.with_name(directory.name + ".partial")   # renamed when complete
    shutil.rmtree(partial, ignore_errors=True)
    log(f"writing the random {shape} {dtype} checkpoint to {directory} (once; it is cached)")
    started = time.perf_counter()
    if dtype == "fp32":
        write_random_checkpoint(partial, SHAPES[shape], seed=SEED)
    else:
        quantize_checkpoint(checkpoint(shape, "fp32", cache_dir), partial)
    partial.rename(directory)
    log(f"  done in {time.perf_counter() - started:.0f} s")
    return directory


# --- one configuration, in a child process ----------------------------------------------------------

def prompt_ids(vocab_size, length):  # the same random prompt for every engine: [1, length]
    return np.random.default_rng(SEED).integers(0, vocab_size, (1, length))


class Minineo:
    def __init__(self, path, threads):
        from ..fast.threads import set_threads
        set_threads(threads)
        self.path = path

    def load(self):
        from ..weights import load
        self.model = load(self.path)
        return self.model.config.vocab_size

    def prefill(self, ids):  # -> the cache, and the greedy next token [1, 1]
        cache = self.model.new_cache(len(ids))
        h = self.model.forward(ids, cache=cache)
        return cache, self.model.logits(h[:, -1]).argmax(-1)[:, None]

    def step(self, cache, token):
        h = self.model.forward(token, cache=cache)
        return self.model.logits(h[:, -1]).argmax(-1)[:, None]


class Transformers:
    def __init__(self, path, threads):
        import torch
        import transformers
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
        torch.set_num_threads(threads)
        self.torch, self.transformers, self.path = torch, transformers, path

    def load(self):
        model = self.transformers.GPTNeoForCausalLM.from_pretrained(self.path, dtype=self.torch.float32)
        self.model = model.eval()
        return self.model.config.vocab_size

    def prefill(self, ids):
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(ids), use_cache=True, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)

    def step(self, cache, token):
        with self.torch.inference_mode():
            out = self.model(input_ids=token, cache=cache, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1].argmax(-1, keepdim=True)


def timed(fn, *args):
    started = time.perf_counter()
    result = fn(*args)
    return time.perf_counter() - started, result


def run_configuration(engine, path, threads, prompts, new_tokens, batches):
    """Everything measured in one run of one configuration, as a dict; runs in its own process."""
    runner = (Minineo if engine == "minineo" else Transformers)(path, threads)
    load_s, vocab_size = timed(runner.load)
    ids = {p: prompt_ids(vocab_size, p) for p in prompts}

    cache, token = runner.prefill(ids[prompts[0]][:, :8])   # warm-up: reads every weight once
    runner.step(cache, token)
    prefill, decode, tokens = {}, {}, []
    for p in prompts:
        seconds, (cache, token) = timed(runner.prefill, ids[p])
        prefill[str(p)] = p / seconds
    for b in batches if new_tokens else []:
        # b copies of the first prompt decode together: each step reads every weight once for all b rows
        cache, token = runner.prefill(np.repeat(ids[prompts[0]], b, axis=0))
        started, row0 = time.perf_counter(), []
        for _ in range(new_tokens):
            row0.append(int(token[0, 0]))
            token = runner.step(cache, token)
        decode[str(b)] = b * new_tokens / (time.perf_counter() - started)
        tokens = tokens or row0
    return {"load_s": load_s, "prefill": prefill, "decode": decode, "tokens": tokens,
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "versions": versions(engine)}


def summarise(runs):  # the per-run results of one configuration -> medians (memory: the largest)
    return {"load_s": statistics.median(r["load_s"] for r in runs),
            "prefill": {p: statistics.median(r["prefill"][p] for r in runs) for p in runs[0]["prefill"]},
            "decode": {b: statistics.median(r["decode"][b] for r in runs) for b in runs[0]["decode"]},
            "peak_rss_bytes": max(r["peak_rss_bytes"] for r in runs),
            "tokens": runs[0]["tokens"], "versions": runs[0]["versions"]}


def versions(engine):
    if engine == "transformers":
        import torch
        import transformers
        return {"torch": torch.__version__, "transformers": transformers.__version__}
    return {}


def run_child(spec):
    """Run one configuration in a fresh Python process; its JSON result is its last line of output."""
    command = [sys.executable, "-m", "minineo.bench", "--child", json.dumps(spec)]
    root = str(Path(__file__).resolve().parent.parent)   # this minineo, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, env=env)
    if done.returncode:
        raise MinineoError(f"the {spec['engine']} {spec['dtype']} run of {spec['shape']} failed "
                         f"(exit code {done.returncode}); its errors are printed above")
    return json.loads(done.stdout.strip().splitlines()[-1])


# --- the machine and the table ------------------------------------------------------------------

def machine():
    from threadpoolctl import threadpool_info

    from ..fast.threads import physical_cores

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernels)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    coretype = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in os.environ}
    return {"cpu": cpu, "cores": physical_cores(), "logical_cpus": os.cpu_count(), "memory_gib": memory / 2**30,
            "python": platform.python_version(), "numpy": np.__version__, "blas": ", ".join(blas) or "?",
            "openblas_env": coretype}


def decode_label(b):
    return "decode tok/s" if b == 1 else f"decode x{b} tok/s"


def table(results, info, args):
    """The results as markdown: the machine, one row per configuration, then minineo / transformers."""
    prompts, batches = args.prompt, [str(b) for b in args.batch]
    head = (["model", "threads", "engine", "dtype", "load s"] + [f"prefill {p} tok/s" for p in prompts]
            + [decode_label(int(b)) for b in batches] + ["peak RSS GB"])
    lines = [f"Machine: {info['cpu']}, {info['cores']} cores ({info['logical_cpus']} logical CPUs), "
             f"{info['memory_gib']:.0f} GiB RAM; Python {info['python']}, NumPy {info['numpy']}, "
             f"{info['blas']}, " + (", ".join(f"{k}={v}" for k, v in info["openblas_env"].items())
                                     or "OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset") + "."]
    torch_versions = next((r["versions"] for r in results if r["engine"] == "transformers"), None)
    if torch_versions:
        lines[0] += f" transformers {torch_versions['transformers']} + torch {torch_versions['torch']} (fp32)."
    lines.append(f"Random weights; median of {args.runs} runs, each a fresh process, the configurations "
                 f"taking turns; decode = {args.new_tokens} greedy steps after a {prompts[0]}-token prompt, "
                 f"KV cache (x B: B copies of the prompt decoded together, tokens/s counting every row); "
                 f"peak RSS = the largest of the runs."
                 + ("" if info.get("load_average") is None
                    else f" Load average when the runs began: {info['load_average']:.1f}."))
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        cells = ([r["shape"], str(r["threads"]), r["engine"], r["dtype"], f"{r['load_s']:.2f}"]
                 + [f"{r['prefill'][str(p)]:.1f}" for p in prompts]
                 + [f"{r['decode'][b]:.2f}" if b in r["decode"] else "" for b in batches]
                 + [f"{r['peak_rss_bytes'] / 1e9:.2f}"])
        lines.append("| " + " | ".join(cells) + " |")
    ratios = ratio_rows(results, prompts, batches)
    if ratios:
        lines += ["", "minineo / transformers fp32 with the same threads, measured in the same run (speed: "
                  "above 1 is faster; load time and memory: below 1 is less):", "",
                  "| model | threads | dtype | load | " + " | ".join(f"prefill {p}" for p in prompts) + " | "
                  + " | ".join(decode_label(int(b)).replace(" tok/s", "") for b in batches)
                  + " | peak RSS | greedy tokens equal |",
                  "|" + "---|" * (len(prompts) + len(batches) + 6)]
        lines += ratios
    return "\n".join(lines) + "\n"


def ratio_rows(results, prompts, batches):
    rows = []
    for r in results:
        peer = next((p for p in results if p["engine"] == "transformers" and p["shape"] == r["shape"]
                     and p["threads"] == r["threads"]), None)
        if r["engine"] != "minineo" or peer is None:
            continue
        speed = [r["prefill"][str(p)] / peer["prefill"][str(p)] for p in prompts]
        decode = [f"{r['decode'][b] / peer['decode'][b]:.2f}x" if b in r["decode"] else "" for b in batches]
        same = sum(a == b for a, b in zip(r["tokens"], peer["tokens"]))
        cells = ([r["shape"], str(r["threads"]), r["dtype"], f"{r['load_s'] / peer['load_s']:.2f}x"]
                 + [f"{x:.2f}x" for x in speed] + decode
                 + [f"{r['peak_rss_bytes'] / peer['peak_rss_bytes']:.2f}x", f"{same}/{len(r['tokens'])}"])
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def log(message):
    print(message, file=sys.stderr, flush=True)


def comma_list(kind, allowed=None, low=None, one=False):
    # an argparse type: "1,2" -> [1, 2] (one=True: a single value); each of kind, in allowed, >= low
    def parse(text):
        try:
            items = [kind(x) for x in text.split(",") if x.strip()]
        except ValueError:
            items = []
        ok = items and (not one or len(items) == 1) and all(
            (allowed is None or x in allowed) and (low is None or x >= low) for x in items)
        if not ok:
            what = ", ".join(allowed) if allowed else f"{kind.__name__}s" + (f" >= {low}" if low is not None else "")
            raise argparse.ArgumentTypeError(f"expected {'one of' if one else 'a comma-separated list of'} {what}, "
                                             f"got {text!r}")
        return items[0] if one else items
    return parse


def parse_args(argv):
    from ..fast.threads import physical_cores

    parser = Parser(prog="python -m minineo.bench", description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=comma_list(str, list(SHAPES)), default=["125M"],
                        help="model shape(s): 125M, 1.3B, 2.7B (comma-separated; default 125M)")
    parser.add_argument("--prompt", type=comma_list(int, low=1), default=[128, 1024],
                        help="prompt lengths for prefill; decode follows the first (default 128,1024)")
    parser.add_argument("--new-tokens", type=comma_list(int, low=0, one=True), default=16,
                        help="decode steps per run (default 16)")
    parser.add_argument("--threads", type=comma_list(int, low=1), default=[physical_cores()],
                        help=f"threads for minineo (set_threads) and for torch, e.g. 1,2 for both in one table "
                             f"(default {physical_cores()})")
    parser.add_argument("--batch", type=comma_list(int, low=1), default=[1],
                        help="decode B copies of the prompt together, e.g. 1,8 (default 1)")
    parser.add_argument("--dtype", type=comma_list(str, ["fp32", "int8"]), default=["fp32", "int8"],
                        help="minineo weight types: fp32, int8 (default both)")
    parser.add_argument("--runs", type=comma_list(int, low=1, one=True), default=3,
                        help="runs (processes) per configuration; medians are reported (default 3)")
    parser.add_argument("--compare", choices=["transformers"],
                        help="also run transformers + torch (fp32) on the same files, in the same run")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help=f"where the random checkpoints are kept (default {default_cache_dir()})")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is None:
        for shape in args.model:
            if max(args.prompt) + args.new_tokens > SHAPES[shape].max_position_embeddings:
                parser.error(f"--prompt: lengths must be 1 .. {SHAPES[shape].max_position_embeddings - args.new_tokens} "
                             f"for {shape}")
    return args


def main(argv=None):
    return run_command(run, parse_args(argv))


def run(args):
    if args.child is not None:
        spec = json.loads(args.child)
        result = run_configuration(spec["engine"], spec["path"], spec["threads"], spec["prompts"],
                                   spec["new_tokens"], spec["batches"])
        print(json.dumps(result))
        return 0
    if args.compare and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None):
        raise MinineoError("--compare transformers needs torch and transformers installed")

    results, load_average = [], os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for shape in args.model:
        configurations = [(threads, engine, dtype) for threads in args.threads
                          for engine, dtype in [("minineo", dtype) for dtype in args.dtype]
                          + ([("transformers", "fp32")] if args.compare else [])]
        paths = {dtype: checkpoint(shape, dtype, args.cache_dir) for _, _, dtype in configurations}
        runs = {configuration: [] for configuration in configurations}
        for i in range(args.runs):
            for threads, engine, dtype in configurations:
                log(f"{shape} {engine} {dtype}, {threads} threads: run {i + 1} of {args.runs}")
                runs[threads, engine, dtype].append(run_child({
                    "engine": engine, "dtype": dtype, "shape": shape, "path": str(paths[dtype]),
                    "threads": threads, "prompts": args.prompt, "new_tokens": args.new_tokens,
                    "batches": args.batch}))
        for (threads, engine, dtype), done in runs.items():
            result = {**summarise(done), "shape": shape, "engine": engine, "dtype": dtype, "threads": threads}
            results.append(result)
            log(f"{shape} {engine} {dtype}, {threads} threads: load {result['load_s']:.2f} s, prefill "
                + ", ".join(f"{p}: {v:.1f}" for p, v in result["prefill"].items()) + " tok/s, decode "
                + ", ".join(f"x{b}: {v:.2f}" for b, v in result["decode"].items())
                + f" tok/s, peak RSS {result['peak_rss_bytes'] / 1e9:.2f} GB")
    info = machine()
    info["load_average"] = load_average
    text = table(results, info, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0
