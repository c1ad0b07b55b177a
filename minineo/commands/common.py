"""What minineo's command lines share: one parser style, one error format, one table of exit codes.

Every command prints a user mistake as one line, `minineo: error: ...`, and exits with
    2  a usage mistake (an unknown flag, a value of the wrong type or out of range)
    1  a failure (a missing file, a bad checkpoint, a prompt too long)
  130  stopped by Ctrl-C (128 + SIGINT, what a shell reports)
"""
import argparse
import os
import sys

from ..errors import MinineoError

USAGE, FAILURE, INTERRUPTED = 2, 1, 130


class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, as every other error here, instead of usage + message
        self.exit(USAGE, f"minineo: error: {message} (see --help)\n")


def positive_int(text):  # an argparse type: the flag's own name reaches the message through argparse
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def add_model_flags(parser):
    """-m/--model, --int8 and -t/--threads, the same for every command that runs a model."""
    parser.add_argument("-m", "--model", metavar="NAME",
                        help="model directory, Hub id, or 125M / 1.3B / 2.7B (default: the bundled model)")
    parser.add_argument("--int8", action="store_true",
                        help="int8 weights: a quarter of the memory, a little less accurate")
    parser.add_argument("-t", "--threads", type=positive_int, metavar="N",
                        help="threads for the matrix products (default: one per physical core, "
                             "used only where a product is big enough to gain from them)")


def run_command(run, args, on_interrupt=None):
    """run(args) -> exit code, with every user mistake printed as one line and Ctrl-C as exit 130.
    Anything else is a bug in minineo and keeps its traceback."""
    try:
        return run(args) or 0
    except MinineoError as e:
        print(f"minineo: error: {e}", file=sys.stderr)
        return FAILURE
    except KeyboardInterrupt:
        if on_interrupt is not None:
            on_interrupt()
        print(file=sys.stderr, flush=True)
        return INTERRUPTED
    except BrokenPipeError:   # `minineo ... | head`: the reader left. Point stdout at /dev/null so that
        # the flush at exit does not fail a second time (Python's own recipe).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return FAILURE
