"""How each weight product runs on this CPU: chosen by measurement, kept per CPU model, forced at will.

The same `x @ w.T` can be computed several ways that give the same numbers, and which is fastest
depends on the CPU: on a 2-core Intel Xeon (Sapphire Rapids) 2 Python threads sharing 32 tiles
read memory at half the speed of BLAS's own 2 threads, while on AMD Zen 4/5 the tiles were at the
bandwidth ceiling (docs/performance.md). So minineo measures each way once per CPU model and thread
count (`python -m minineo.calibrate`, 10-15 seconds, run by itself the first time a model
multiplies) and keeps the winners in <cache>/minineo/choices/<CPU>.json:

    decode            one row of x (a decode step, bound by memory bandwidth):
                      "blas"  BLAS's own threads split each product, as NumPy's plain `x @ w.T` does
                      "tiles" minineo's threads take tiles of rows in turn, each calling 1-thread BLAS
    tile_form         how a tile meets one row of x: "matmul" (x @ w[r0:r1].T, what `linear` writes)
                      or "dot" (np.dot(w[r0:r1], x), BLAS's other matrix-vector kernel)
    tiles_per_thread  float32 tiles per thread in "tiles" mode: more let a slowed core hand work over
    int8_tile_kib     KiB of float32 that a tile of an int8 weight is converted into, few rows of x:
                      a tile that stays in L2 converts faster, fewer tiles cost fewer Python calls
    int8_cast         how a tile of int8 weights becomes float32: "direct" (one cast) or "int16"
                      (int8 -> int16 -> float32: on a Xeon core NumPy 2.4 cast int8 to float32 at
                      5.0 G values/s, but int8 to int16 at 11 and int16 to float32 at 14)
    prefill           many rows of x (a prompt): "blas" or "tiles"
    int8_prefill_rows at most this many rows of an int8 weight converted at once for a prompt (fewer,
                      so that every thread has as many tiles): each converted tile is reused by every
                      row of x, so wide tiles let sgemm run at speed (64-512 rows were within noise of
                      each other on a 2-core AMD EPYC, Zen 5)
    int8_prefill_cast how a prompt's int8 tile becomes float32, "direct" or "int16" as above: a tile of
                      1,024 rows (10 MB of float32) outgrows L2, and on the 2-core Xeon one cast then ran
                      at 4.4 G values/s against 2.6 through int16, the reverse of a decode tile's
    prompt_attention  how a prompt's attention runs (fast/banded.py): "one" (one thread) or "heads"
                      (minineo's threads share its heads: the softmax and masking, not only the products)
    prompt_elementwise how a prompt's GELU runs (fast/elementwise.py): "one" (one thread, a block of
                      rows at a time) or "rows" (minineo's threads share the blocks)
    fp32_threads_from weights x rows of x from which a tiled float32 product is shared by minineo's
    int8_threads_from threads, and an int8 one: below it a parallel region (waking the pool's
                      threads) costs more than a second thread saves. On a quiet 2-core Xeon, 125M
                      int8 decode ran 28.5 tok/s from 2^22, 33.2 from 2^20 (which shares the MLP's
                      3072 x 768 matrices), 29.5 from 2^18
    int8_workers      who shares an int8 weight's tiles for a few rows of x (fast/processes.py): minineo's
                      "threads", or "processes" (the main one and workers): each NumPy call of a tile
                      hands Python's GIL over, and on the 2-core Xeon two threads waited on each other

A measurement is only as good as the machine was quiet: on a 2-core AMD EPYC, one taken while pip
used a core chose tiles and one thread where the quiet machine chose BLAS and two, and made int8
decode 2x slower. So the file keeps, with each thread count's choices, when they were measured,
with which BLAS kernel, and how busy other programs kept the CPUs meanwhile (measure.py). A run
measures again, in place of using the kept choices:
- when the BLAS kernel is not the one they were measured with (another NumPy, or OPENBLAS_CORETYPE);
- when they were measured under load (or by a minineo that did not record the load), at least
  RETRY_AFTER_S later, if the machine is quiet now (other programs kept under LOADED_CORES busy for
  QUIET_PROBE_S); on a machine still busy it uses them, and looks again RETRY_AFTER_S later. A
  machine that looks quiet but measures unsteadily (a laptop's clock that drops as it heats) is
  measured again at most MAX_TRIES times, each wait ten times longer than the one before.
`python -m minineo.calibrate` always measures again, and `--show` prints what is kept, when and
under what load it was measured.

MININEO_CHOICES="decode=tiles,tile_form=dot" forces any of them (the others are measured); a
full set skips the measurement. Where nothing can be measured (no writable cache, the measurement
failed) the defaults below hold: NumPy's own product, and int8 tiles small enough for any L2.
"""
import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from ..errors import MinineoError
from .cpu import LOADED_CORES, cpu_name, others_busy
from .threads import blas_kernel, get_threads

ENV = "MININEO_CHOICES"
PREFILL_ROWS = 32   # from this many rows of x a product is a prompt's, bound by arithmetic, not memory
RETRY_AFTER_S = 60  # a measurement under load is taken again no sooner than this after the last look
QUIET_PROBE_S = 0.5 # how long a run watches other programs before measuring again
MAX_TRIES = 3       # measurements again that came out under load too, before leaving it to the user


@dataclasses.dataclass(frozen=True)
class Choices:
    decode: str = "blas"
    tile_form: str = "matmul"
    tiles_per_thread: int = 4
    int8_tile_kib: int = 256
    int8_cast: str = "direct"
    prefill: str = "blas"
    int8_prefill_rows: int = 256
    int8_prefill_cast: str = "direct"
    prompt_attention: str = "one"
    prompt_elementwise: str = "one"
    fp32_threads_from: int = 1 << 22
    int8_threads_from: int = 1 << 22
    int8_workers: str = "threads"


ALLOWED = {"decode": ("blas", "tiles"), "tile_form": ("matmul", "dot"), "int8_cast": ("direct", "int16"),
           "int8_prefill_cast": ("direct", "int16"), "prefill": ("blas", "tiles"), "prompt_attention": ("one", "heads"),
           "prompt_elementwise": ("one", "rows"), "int8_workers": ("threads", "processes")}
NAMES = [field.name for field in dataclasses.fields(Choices)]
_chosen = {}   # threads -> Choices, for this process


def current():  # -> the Choices for the present thread count (measured on first use, then kept)
    threads = get_threads()
    choices = _chosen.get(threads)
    if choices is None:
        choices = _chosen[threads] = choose(threads)
    return choices


def known():  # -> the Choices in use for the present thread count, never measuring: the defaults (and
    # what MININEO_CHOICES forces) until a product has chosen (attention follows its q/k/v products)
    return _chosen.get(get_threads()) or dataclasses.replace(Choices(), **forced_choices())


def forget():  # after MININEO_CHOICES or the cache changed: choose again on the next product
    _chosen.clear()


def choose(threads):
    forced = forced_choices()
    if set(forced) == set(NAMES):
        return Choices(**forced)
    measured = read_cached(threads)
    if writable(cache_path().parent):   # else each process would measure again
        why = "first time" if measured is None else measure_again(threads)
        if why:
            tries = read_entry(threads).get("tries", 0)
            again = calibrate_in_child(threads, why)
            if again is None and measured is not None:   # it failed: not again before RETRY_AFTER_S
                update_entry(threads, looked_at=time.time())
            elif again is not None and measured is not None and under_load(threads):
                update_entry(threads, tries=tries + 1)   # under load again: wait longer next time
            measured = again or measured
    return dataclasses.replace(measured or Choices(), **forced)


def under_load(threads):  # -> why the kept measurement cannot be trusted on a quiet machine, or None
    return ((read_measured(threads) or {}).get("load") or {}).get("under_load")


def measure_again(threads, now=None):  # -> why the kept choices must be measured again now, or None
    entry = read_entry(threads)
    if "blas" in entry and entry["blas"] != blas_kernel():
        return f"the BLAS kernel changed (measured with {entry.get('blas')}, now {blas_kernel()})"
    load = (entry.get("measured") or {}).get("load")
    if load is not None and not load.get("under_load"):
        return None
    now, tries = time.time() if now is None else now, entry.get("tries", 0)
    waited = now - max(entry.get("measured_at", 0), entry.get("looked_at", 0))
    if tries >= MAX_TRIES or waited < RETRY_AFTER_S * 10 ** tries:
        return None
    others = others_busy(QUIET_PROBE_S)
    if others is not None and others >= LOADED_CORES:   # still busy: use them, look again later
        update_entry(threads, looked_at=now)
        return None
    return ("the kept measurement did not record the load" if load is None
            else f"the kept measurement ran under load ({load['under_load']}) and the machine is quiet now")


def forced_choices(text=None):  # MININEO_CHOICES="decode=tiles,int8_tile_kib=512" -> {name: value}
    text = os.environ.get(ENV, "") if text is None else text
    forced = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if name not in NAMES:
            raise MinineoError(f"{ENV}: unknown choice {name!r}; expected one of {', '.join(NAMES)}")
        if name in ALLOWED:
            if value not in ALLOWED[name]:
                raise MinineoError(f"{ENV}: {name} must be one of {', '.join(ALLOWED[name])}, got {value!r}")
            forced[name] = value
        else:
            if not value.isdigit() or int(value) < 1:
                raise MinineoError(f"{ENV}: {name} must be an integer >= 1, got {value!r}")
            forced[name] = int(value)
    return forced


def cache_home():  # where minineo keeps what it makes for this user: <XDG cache>/minineo
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "minineo"


def cache_path():  # one file per CPU model: the choices hold for every machine with that CPU
    slug = re.sub(r"[^A-Za-z0-9]+", "-", cpu_name()).strip("-") or "cpu"
    return cache_home() / "choices" / f"{slug}.json"


def writable(directory):
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def read_file():  # -> the cache file's contents, {} if there is none or it cannot be read
    try:
        data = json.loads(cache_path().read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) and isinstance(data.get("threads"), dict) else {}


def kept_threads():  # -> the thread counts the file keeps choices for, ascending
    return sorted(int(t) for t in read_file().get("threads", {}) if t.isdigit())


def read_entry(threads):  # -> {"choices", "measured", "measured_at", "blas"} kept for this thread count, or {}
    entry = read_file().get("threads", {}).get(str(threads))
    return entry if isinstance(entry, dict) else {}


def read_cached(threads):  # -> Choices measured earlier for this CPU and thread count, or None
    kept = read_entry(threads).get("choices")
    # kept by another minineo version, which measured other choices than these: measure again
    return Choices(**kept) if isinstance(kept, dict) and set(kept) == set(NAMES) else None


def write_cached(threads, choices, measured, now=None):
    update_entry(threads, replace=True, choices=dataclasses.asdict(choices), measured=measured,
                 measured_at=time.time() if now is None else now, blas=blas_kernel())


def update_entry(threads, replace=False, **fields):  # sets fields of this thread count's entry (replace: all of it)
    path = cache_path()
    entries = read_file().get("threads", {})
    entries[str(threads)] = fields if replace else {**entries.get(str(threads), {}), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps({"cpu": cpu_name(), "threads": entries}, indent=2))
    partial.replace(path)   # atomic: a process reading meanwhile sees the old file or the new one


def read_measured(threads):  # -> what the last calibration measured for this thread count, or None
    return read_entry(threads).get("measured")


def thread_count(n):  # 1 -> "1 thread", 2 -> "2 threads"
    return f"{n} thread{'s' * (n > 1)}"


def describe_kept(threads, now=None):  # -> one line: when and under what load the kept choices were measured
    entry, label = read_entry(threads), thread_count(threads)
    if not entry:
        return f"{label}: nothing kept yet"
    now = time.time() if now is None else now
    when, load = entry.get("measured_at"), (entry.get("measured") or {}).get("load")
    if when is None or load is None:
        return (f"{label}: kept by an earlier minineo, which recorded neither when nor under what load it "
                f"measured: a later run on a quiet machine measures again")
    said = (f"{label}: measured {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(when))} "
            f"({ago(now - when)} ago) with {entry.get('blas') or 'a BLAS not recorded'}")
    others = load.get("others_cores")
    said += "; other programs kept " + ("an unknown number of cores" if others is None else f"{others:.2f} cores")
    said += " busy, load average " + " -> ".join("?" if a is None else f"{a:.2f}" for a in load.get("load_average", []))
    if load.get("under_load"):
        later = ("a later run on a quiet machine measures again" if entry.get("tries", 0) < MAX_TRIES else
                 f"measured {MAX_TRIES} more times, under load each time: minineo no longer measures by itself")
        return said + (f"; UNDER LOAD ({load['under_load']}): {later} "
                       f"(or run `python -m minineo.calibrate` when the machine is quiet)")
    return said + "; quiet"


def ago(seconds):  # 75 -> "1 minute", 7300 -> "2 hours"
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' * (n > 1)}"
    return f"{max(0, int(seconds))} seconds"


def python_command(*argv):  # -> the command and environment of `python argv` that imports this minineo, installed or not
    root = str(Path(__file__).resolve().parent.parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    return [sys.executable, *argv], env


def run_module(module, *argv, **options):  # `python -m module argv` with this minineo
    command, env = python_command("-m", module, *argv)
    return subprocess.run(command, env=env, **options)


def calibrate_in_child(threads, why="first time", megabytes=None):
    """Run `python -m minineo.calibrate` in a child process (its ~1 GB of test matrices never count
    in this process's memory) and read what it cached; None if it could not."""
    if sys.stderr.isatty():   # a person waiting is told why; a log or a test's captured output is not
        print(f"minineo: measuring which way of multiplying is fastest on this CPU with {thread_count(threads)} "
              f"({why}; 10-15 seconds; kept in {cache_path()})", file=sys.stderr, flush=True)
    size = ["--megabytes", str(megabytes)] if megabytes else []
    done = run_module("minineo.calibrate", "--threads", str(threads), *size, stdout=subprocess.DEVNULL)
    choices = read_cached(threads) if done.returncode == 0 else None
    if choices is None and sys.stderr.isatty():
        print(f"minineo: the measurement failed; using the defaults {Choices()}", file=sys.stderr)
    return choices
