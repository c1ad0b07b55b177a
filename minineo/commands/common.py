"""What minineo's command lines share: one parser style, one error format, one table of exit codes.

Every command prints a user mistake as one line, `minineo: error: ...`, and exits with
    2  a usage mistake (an unknown flag, a value of the wrong type or out of range, flags that conflict)
    1  a failure (a missing file, a bad checkpoint, a prompt too long)
  130  stopped by Ctrl-C (128 + SIGINT, what a shell reports)
"""
import argparse
import difflib
import os
import sys

from ..errors import MinineoError, UsageError
from ..fast.threads import set_threads
from ..weights import load

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, as every other error here, instead of usage + message
        self.exit(USAGE, f"minineo: error: {message} (see --help)\n")

    def parse_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        misspelt = self.unknown_flag(args)   # before argparse, which would first ask for missing arguments
        if misspelt:
            self.error(misspelt)
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            self.error(self.unquoted(args, parsed, unknown))
        return parsed

    def unknown_flag(self, args):  # "unrecognized argument --temprature: did you mean --temperature?", or None
        known = [flag for action in self._actions for flag in action.option_strings]
        for arg in args:
            if arg == "--":
                return None
            flag = arg.split("=", 1)[0]
            long = flag.startswith("--") and not any(k.startswith(flag) for k in known)   # argparse takes prefixes
            short = flag.startswith("-") and not flag.startswith("--") and flag[1:2].isalpha() and flag[:2] not in known
            if long or short:
                near = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
                return f"unrecognized argument {flag}" + (f": did you mean {near[0]}?" if near else "")
        return None

    def unquoted(self, args, parsed, unknown):  # words the shell split from a value with spaces, with a hint
        for action in self._actions:   # the positional that took the first of them
            value = getattr(parsed, action.dest, None)
            if not action.option_strings and isinstance(value, str) and value in args:
                start = args.index(value)
                if args[start + 1:start + 1 + len(unknown)] == unknown:
                    return (f"unrecognized arguments: {' '.join(unknown)}; to pass text with spaces, quote it: "
                            f"\"{' '.join([value, *unknown])}\"")
        return f"unrecognized arguments: {' '.join(unknown)}"


def number(kind, check, expected):  # an argparse type: kind(text) that passes check, else "expected ..."
    # argparse puts the flag's own name (`argument --top-p: ...`) in front of the message
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not check(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    return parse


positive_int = number(int, lambda n: n >= 1, "an integer >= 1")


def read_text(stream, where, limit, too_long):  # a binary stream -> str, at most `limit` bytes of UTF-8
    # Bounded, so that /dev/zero or a pipe that never ends is an error, not a full memory.
    data = stream.read(limit + 1)
    if len(data) > limit:
        raise MinineoError(f"{where}: stopped reading after {too_long}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinineoError(f"{where}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from None


# Read at most this much text: a file that never ends (/dev/zero, a FIFO left open) must not fill the
# memory. 256 MiB is ~80 M tokens, days of scoring or training for 2.7B on a laptop.
MAX_TEXT_BYTES = 256 << 20


def read_text_file(path, empty="", too_long=""):  # a file named on the command line -> its text, exactly
    # (no newline translation), or one line saying why not: missing, unreadable, too long, not UTF-8, empty
    try:
        with open(path, "rb") as f:
            text = read_text(f, path, MAX_TEXT_BYTES, f"{MAX_TEXT_BYTES >> 20} MiB{too_long}")
    except OSError as e:
        raise MinineoError(f"{path}: {e.strerror.lower()}") from None
    if not text.strip():
        raise MinineoError(f"{path}: the file is empty{empty}")
    return text


def progress_bar(unit, **options):  # -> (progress(done, total), close()): a tqdm bar on stderr
    # tqdm draws in place on a terminal and stays quiet in a log (disable=None: only on a TTY)
    from tqdm import tqdm   # comes with huggingface_hub
    bar = tqdm(unit=unit, file=sys.stderr, disable=None, **options)

    def show(done, total):
        bar.total = total
        bar.update(done - bar.n)
    return show, bar.close


def add_model_flags(parser):
    """-m/--model, --int8 and -t/--threads, the same for every command that runs a model."""
    parser.add_argument("-m", "--model", metavar="NAME",
                        help="model directory, Hub id, or 125M / 1.3B / 2.7B (default: the bundled model)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights: a quarter of the memory, a little less accurate")
    parser.add_argument("-t", "--threads", type=positive_int, metavar="N",
                        help="threads for the matrix products (default: one per physical core, "
                             "used only where a product is big enough to gain from them)")


def load_model(args):  # the model that -m/--int8 name, with -t's threads
    # Threads are set whether or not -t was given: until set_threads is called BLAS runs its own threads
    # in the small attention products, and they stall when another program holds a core (6x slower, measured).
    set_threads(args.threads)
    return load(args.model, int8=args.int8)


def run_command(run, args, on_interrupt=None):
    """run(args) -> exit code, with every user mistake printed as one line and Ctrl-C as exit 130.
    Anything else is a bug in minineo and keeps its traceback."""
    try:
        try:
            code = run(args) or 0
            sys.stdout.flush()   # output still buffered fails here, not at exit, where Python can only print
            return code          # "Exception ignored ... BrokenPipeError"
        except MinineoError as e:
            print(f"minineo: error: {e}", file=sys.stderr)
            return USAGE if isinstance(e, UsageError) else FAILURE
        except KeyboardInterrupt:
            if on_interrupt is not None:
                on_interrupt()
            print(file=sys.stderr, flush=True)
            return INTERRUPTED
    except BrokenPipeError:   # `minineo ... | head`: the reader took what it wanted and left, which is no
        # error. Point stdout and stderr at the null device so that the flush at exit does not fail again
        # (Python's own recipe; it works where there is no SIGPIPE, on Windows, too).
        null = os.open(os.devnull, os.O_WRONLY)
        for stream in (sys.stdout, sys.stderr):
            os.dup2(null, stream.fileno())
        return 0


def peak_memory():  # -> the process's peak resident memory in bytes, or None where it cannot be read
    try:
        import resource   # Unix only: imported here, so that every command starts on Windows
    except ImportError:
        return windows_peak_memory()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024   # bytes on macOS, KiB on Linux


def windows_peak_memory():  # -> PeakWorkingSetSize from GetProcessMemoryInfo, or None elsewhere
    if sys.platform != "win32":
        return None
    import ctypes
    from ctypes import wintypes

    class Counters(ctypes.Structure):   # PROCESS_MEMORY_COUNTERS
        _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD),
                    *((name, ctypes.c_size_t) for name in (
                        "PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage", "QuotaPagedPoolUsage",
                        "QuotaPeakNonPagedPoolUsage", "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage"))]

    counters = Counters(cb=ctypes.sizeof(Counters))
    process = ctypes.windll.kernel32.GetCurrentProcess()
    ok = ctypes.windll.psapi.GetProcessMemoryInfo(process, ctypes.byref(counters), counters.cb)
    return counters.PeakWorkingSetSize if ok else None
