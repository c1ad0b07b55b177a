"""How fast minineo runs GPT-Neo on this machine, and how that compares with transformers + PyTorch.

    python -m minineo.bench --model 2.7B --dtype fp32,int8 --compare transformers --out bench.md

The weights are random, written with NumPy alone in the released models' shapes and cached under
~/.cache/minineo/bench/<shape>-<dtype> (int8 through `python -m minineo.quantize`), so the
benchmark needs no download and no PyTorch. Speed does not depend on the weights' values.

First the bench measures this machine (`python -m minineo.calibrate` for each thread count): its
memory-bandwidth ceiling, the fastest fp32 matrix-vector product over weights larger than the
last-level cache, and the way of multiplying that minineo then uses here (minineo/fast/choices.py).
Every run of every configuration (model shape x engine x dtype) is then a fresh Python process
(minineo/commands/measure_configuration.py says what it measures), so that its peak resident
memory is its own, and the configurations take turns run by run, so that a machine that gets busier
or quieter meanwhile slows them all alike. The table names the CPU and gives the median over --runs
processes of each figure, the largest peak memory, and each decode speed as a fraction of the
ceiling (the weights a step reads, per second, against the bandwidth measured).
"""
import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from ..errors import MinineoError
from ..fast import choices as chosen
from ..fast.cpu import cache_bytes
from ..fast.threads import OPENBLAS_SETTINGS
from ..model.config import PRESETS, Config
from .common import Parser, run_command
from .measure_configuration import PREFILL_REPEATS, SEED

TINY = Config(vocab_size=512, hidden_size=64, num_layers=2, num_heads=4, intermediate_size=256,
              window_size=16, attention_layers=("global", "local"), max_position_embeddings=2048,
              eos_token_id=511)
SHAPES = {**PRESETS, "tiny": TINY}   # "tiny" is for the tests: seconds, not minutes


def default_cache_dir():
    return chosen.cache_home() / "bench"


# --- the checkpoints ------------------------------------------------------------------------------

def checkpoint(shape, dtype, cache_dir):
    """The directory of the random checkpoint of this shape and dtype, written on first use."""
    from ..weights.int8_copy import quantize_checkpoint
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

def child(module, *argv):
    """Run `python -m module argv` in a fresh process -> its stdout; a failure -> MinineoError with the
    last line it wrote to stderr (its `minineo: error: ...`, or the exception line of a traceback)."""
    done = chosen.run_module(module, *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if done.returncode:
        last = ([line for line in done.stderr.splitlines() if line.strip()] or ["(nothing on stderr)"])[-1]
        raise MinineoError(f"exit code {done.returncode}: {last.removeprefix('minineo: error: ')}")
    return done.stdout


def run_child(spec):  # one configuration's run -> its result
    try:
        out = child("minineo.commands.measure_configuration", json.dumps(spec))
    except MinineoError as e:
        raise MinineoError(f"the {spec['engine']} {spec['dtype']} run of {spec['shape']} failed ({e})") from None
    return json.loads(out.strip().splitlines()[-1])


def measure_machine(threads, megabytes=None):
    """The bandwidth ceiling and the choices for each thread count, measured now (and kept for minineo's runs)."""
    try:
        child("minineo.calibrate", "--threads", ",".join(map(str, threads)),
              *(["--megabytes", str(megabytes)] if megabytes else []))
    except MinineoError as e:
        raise MinineoError(f"measuring this machine failed ({e})") from None
    return {t: {"measured": chosen.read_measured(t), "choices": chosen.read_cached(t)} for t in threads}


def summarise(runs):  # the per-run results of one configuration -> medians (memory: the largest)
    peaks = [r["peak_rss_bytes"] for r in runs if r["peak_rss_bytes"] is not None]
    return {"load_s": statistics.median(r["load_s"] for r in runs),
            "prefill": {p: statistics.median(r["prefill"][p] for r in runs) for p in runs[0]["prefill"]},
            "decode": {b: statistics.median(r["decode"][b] for r in runs) for b in runs[0]["decode"]},
            "peak_rss_bytes": max(peaks) if peaks else None, "weight_bytes": runs[0]["weight_bytes"],
            "tokens": runs[0]["tokens"], "versions": runs[0]["versions"]}


# --- the machine and the table ------------------------------------------------------------------

def machine():
    from threadpoolctl import threadpool_info

    from ..fast.cpu import describe

    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    blas = [f"{i.get('internal_api')} {i.get('version')} ({i.get('architecture', '?')} kernels)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    coretype = {k: os.environ[k] for k in OPENBLAS_SETTINGS if k in os.environ}
    return {"cpu": describe(), "logical_cpus": os.cpu_count(), "memory_gib": memory / 2**30,
            "python": platform.python_version(), "numpy": np.__version__, "blas": ", ".join(blas) or "?",
            "openblas_env": coretype}


def machine_line(info):  # the table's first line, also printed when the bench begins
    return (f"CPU: {info['cpu']} ({info['logical_cpus']} logical CPUs), {info['memory_gib']:.0f} GiB RAM; "
            f"Python {info['python']}, NumPy {info['numpy']}, {info['blas']}, "
            + (", ".join(f"{k}={v}" for k, v in info["openblas_env"].items())
               or " and ".join(OPENBLAS_SETTINGS) + " unset") + ".")


def decode_label(b):
    return "decode tok/s" if b == 1 else f"decode x{b} tok/s"


def gb(n):
    return "n/a" if n is None else f"{n / 1e9:.2f}"


def table(results, info, args):
    """The results as markdown: the CPU, its ceiling and minineo's choices, one row per configuration,
    then minineo / transformers."""
    prompts, batches = args.prompt, [str(b) for b in args.batch]
    head = (["model", "threads", "engine", "dtype", "load s"] + [f"prefill {p} tok/s" for p in prompts]
            + [label for b in batches for label in (decode_label(int(b)), decode_label(int(b)).replace(
                "tok/s", "% of ceiling"))] + ["peak RSS GB"])
    lines = [machine_line(info)]
    torch_versions = next((r["versions"] for r in results if r["engine"] == "transformers"), None)
    if torch_versions:
        lines[0] += f" transformers {torch_versions['transformers']} + torch {torch_versions['torch']} (fp32)."
    ceilings = info["ceilings"]
    some = next(iter(ceilings.values()))["measured"]
    l3 = cache_bytes()[3]
    where = ("the L3's size unknown" if l3 is None else f"more than the {l3 / 2**20:g} MiB L3" if some["weights_bytes"] > l3
             else f"within the {l3 / 2**20:g} MiB L3: a cache's speed, not memory's")
    lines.append(f"Bandwidth ceiling, the fastest fp32 matrix-vector product over {some['weights_bytes'] / 1e9:.2f} GB "
                 f"of weights ({where}): "
                 + ", ".join(f"{c['measured']['ceiling_gb_per_s']:.1f} GB/s with {chosen.thread_count(t)}"
                             for t, c in ceilings.items())
                 + ". minineo's choices here (minineo/fast/choices.py): "
                 + "; ".join(f"{chosen.thread_count(t)}: " + ", ".join(f"{k}={v}" for k, v in c["choices"].__dict__.items())
                             for t, c in ceilings.items()) + ".")
    loaded = {t: c["measured"].get("load", {}).get("under_load") for t, c in ceilings.items()}
    lines += [f"The measurement with {chosen.thread_count(t)} ran UNDER LOAD ({why}): its ceiling and choices are "
              f"not this machine's quiet ones." for t, why in loaded.items() if why]
    lines.append(f"Random weights; median of {args.runs} runs, each a fresh process, the configurations "
                 f"taking turns; prefill = the median of {PREFILL_REPEATS} passes in each run; decode = "
                 f"{args.new_tokens} greedy steps after a {prompts[0]}-token prompt, "
                 f"KV cache (x B: B copies of the prompt decoded together, tokens/s counting every row); "
                 f"% of ceiling = the bytes of weights a step reads, per second, against the ceiling with "
                 f"the same threads; peak RSS = the largest of the runs."
                 + ("" if info.get("load_average") is None
                    else f" Load average when the runs began: {info['load_average']:.1f}."))
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        ceiling = ceilings[r["threads"]]["measured"]["ceiling_gb_per_s"] * 1e9
        cells = ([r["shape"], str(r["threads"]), r["engine"], r["dtype"], f"{r['load_s']:.2f}"]
                 + [f"{r['prefill'][str(p)]:.1f}" for p in prompts]
                 + [cell for b in batches for cell in (
                     (f"{r['decode'][b]:.2f}", f"{100 * r['decode'][b] / int(b) * r['weight_bytes'] / ceiling:.0f}%")
                     if b in r["decode"] else ("", ""))]
                 + [gb(r["peak_rss_bytes"])])
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
                 + [f"{r['peak_rss_bytes'] / peer['peak_rss_bytes']:.2f}x" if r["peak_rss_bytes"] and peer["peak_rss_bytes"]
                    else "n/a", f"{same}/{len(r['tokens'])}"])
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
    parser.add_argument("--ceiling-mb", type=comma_list(int, low=1, one=True), metavar="MB",
                        help="weights read to measure the bandwidth ceiling, in MB (default: twice the L3, "
                             "at least 256 MiB, at most 1.5 GiB)")
    parser.add_argument("--out", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir(),
                        help=f"where the random checkpoints are kept (default {default_cache_dir()})")
    args = parser.parse_args(argv)
    for shape in args.model:
        if max(args.prompt) + args.new_tokens > SHAPES[shape].max_position_embeddings:
            parser.error(f"--prompt: lengths must be 1 .. {SHAPES[shape].max_position_embeddings - args.new_tokens} "
                         f"for {shape}")
    return args


def main(argv=None):
    def interrupted():   # Ctrl-C: one line, and the runs so far are not a table
        print("minineo: error: interrupted (Ctrl-C); no table written", file=sys.stderr)
    return run_command(run, parse_args(argv), on_interrupt=interrupted)


def run(args):
    if args.compare and (importlib.util.find_spec("torch") is None or importlib.util.find_spec("transformers") is None):
        raise MinineoError("--compare transformers needs torch and transformers installed")

    log(machine_line(machine()))
    log("measuring this machine's bandwidth ceiling and minineo's choices with "
        + " and ".join(chosen.thread_count(t) for t in args.threads))
    ceilings = measure_machine(args.threads, args.ceiling_mb)
    for t, c in ceilings.items():
        if (c["measured"] or {}).get("load", {}).get("under_load"):
            log(f"warning: the measurement with {chosen.thread_count(t)} ran under load ({c['measured']['load']['under_load']})")
    results, load_average = [], os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    for shape in args.model:
        configurations = [(threads, engine, dtype) for threads in args.threads
                          for engine, dtype in [("minineo", dtype) for dtype in args.dtype]
                          + ([("transformers", "fp32")] if args.compare else [])]
        paths = {dtype: checkpoint(shape, dtype, args.cache_dir) for _, _, dtype in configurations}
        runs = {configuration: [] for configuration in configurations}
        for i in range(args.runs):
            for threads, engine, dtype in configurations:
                log(f"{shape} {engine} {dtype}, {chosen.thread_count(threads)}: run {i + 1} of {args.runs}")
                runs[threads, engine, dtype].append(run_child({
                    "engine": engine, "dtype": dtype, "shape": shape, "path": str(paths[dtype]),
                    "threads": threads, "prompts": args.prompt, "new_tokens": args.new_tokens,
                    "batches": args.batch}))
        for (threads, engine, dtype), done in runs.items():
            result = {**summarise(done), "shape": shape, "engine": engine, "dtype": dtype, "threads": threads}
            results.append(result)
            log(f"{shape} {engine} {dtype}, {chosen.thread_count(threads)}: load {result['load_s']:.2f} s, prefill "
                + ", ".join(f"{p}: {v:.1f}" for p, v in result["prefill"].items()) + " tok/s, decode "
                + ", ".join(f"x{b}: {v:.2f}" for b, v in result["decode"].items())
                + f" tok/s, peak RSS {gb(result['peak_rss_bytes'])} GB")
    info = {**machine(), "load_average": load_average, "ceilings": ceilings}
    text = table(results, info, args)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0
