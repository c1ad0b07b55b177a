"""The command line: `minineo "prompt"` (or `python -m minineo`) prints the continuation as it is generated.

Flags follow llama.cpp (-n, --temp, --top-k, --top-p, --repeat-penalty, -s, -t; temperature 0 =
greedy) and transformers (--max-new-tokens, --temperature, --repetition-penalty, ...). Unlike
generate(), the CLI samples by default, at temperature 0.8 as llama.cpp does: greedy decoding of a
small model loops on one phrase, which is a poor first impression of a text tool.
"""
import argparse
import os
import resource
import sys
import time

from .errors import MinineoError
from .generate import Settings, batch_prompts, detokenize, generate_steps
from .model import load
from .threads import set_threads

DEFAULT_TEMPERATURE = 0.8      # llama.cpp's default; 0 = greedy
DEFAULT_MAX_NEW_TOKENS = 100
INTERRUPTED = 130              # 128 + SIGINT, what a shell reports for a program stopped by Ctrl-C


class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, as every other error here, instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parser():
    p = Parser(prog="minineo", description="Generate text with GPT-Neo in plain NumPy.")
    p.add_argument("prompt", nargs="?", help="the text to continue; '-' (or nothing, with piped input): "
                   "read it from stdin; nothing at a terminal: start from <|endoftext|>")
    p.add_argument("-m", "--model", metavar="NAME",
                   help="model directory, Hub id, or 125M / 1.3B / 2.7B (default: the bundled model)")
    p.add_argument("-n", "--max-new-tokens", type=int, metavar="N", default=DEFAULT_MAX_NEW_TOKENS,
                   help=f"tokens to generate at most (default {DEFAULT_MAX_NEW_TOKENS})")
    p.add_argument("--temperature", "--temp", type=float, metavar="T", default=DEFAULT_TEMPERATURE,
                   help=f"sampling temperature, 0 = greedy (default {DEFAULT_TEMPERATURE})")
    p.add_argument("--top-k", type=int, metavar="K", default=Settings.top_k,
                   help=f"sample among the k likeliest tokens, 0 = all (default {Settings.top_k})")
    p.add_argument("--top-p", type=float, metavar="P", default=Settings.top_p,
                   help=f"sample among the likeliest tokens that make up this probability, in (0, 1] "
                        f"(default {Settings.top_p})")
    p.add_argument("--repetition-penalty", "--repeat-penalty", type=float, metavar="R",
                   default=Settings.repetition_penalty,
                   help=f"> 1 makes tokens already in the text less likely (default {Settings.repetition_penalty})")
    p.add_argument("--min-new-tokens", type=int, metavar="N", default=Settings.min_new_tokens,
                   help="do not stop at <|endoftext|> before this many tokens")
    p.add_argument("-s", "--seed", type=int, metavar="SEED",
                   help="random seed: the same seed, the same text (default: random)")
    p.add_argument("-t", "--threads", type=int, metavar="N",
                   help="threads for the matrix products (default: one per core)")
    p.add_argument("--int8", action="store_true", help="int8 weights: a quarter of the memory, a little less accurate")
    p.add_argument("--truncate", action="store_true", help="keep the end of a prompt too long for the context")
    p.add_argument("--no-display-prompt", action="store_true", help="print only the generated text")
    p.add_argument("--no-stream", action="store_true", help="print the text at the end instead of as it comes")
    p.add_argument("--stats", action="store_true", help="print load time, speed and peak memory on stderr")
    return p


def settings_from(args):  # the parsed flags -> generate's settings, checked before the model loads
    settings = dict(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                    temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                    repetition_penalty=args.repetition_penalty, min_new_tokens=args.min_new_tokens,
                    seed=args.seed, truncate=args.truncate)
    Settings(**settings)
    return settings


def read_prompt(prompt):
    if prompt is not None and prompt != "-":
        return prompt
    if prompt is None and sys.stdin.isatty():
        return ""   # nothing given: unconditional generation
    try:
        # like the shell's $(...), drop the trailing newline that `echo` and editors add
        return sys.stdin.buffer.read().decode("utf-8").rstrip("\n")
    except UnicodeDecodeError as e:
        raise MinineoError(f"stdin is not UTF-8 text: byte 0x{e.object[e.start]:02x} at offset {e.start}") from None


class Output:
    """stdout, written piece by piece and flushed (streaming) or all at once at the end (--no-stream)."""

    def __init__(self, stream):
        self.stream, self.held = stream, []

    def write(self, text):
        if self.stream:
            sys.stdout.write(text)
            sys.stdout.flush()
        else:
            self.held.append(text)

    def finish(self):
        sys.stdout.write("".join(self.held) + "\n")
        sys.stdout.flush()


class Clock:
    """When the first new token came and how many followed: prompt and generation speeds."""

    def __init__(self):
        self.start, self.first, self.count = time.perf_counter(), None, 0

    def timed(self, tokens):  # an iterator of tokens -> the same tokens, timed
        for token in tokens:
            if self.first is None:
                self.first = time.perf_counter()
            self.count += 1
            yield token

    def report(self, prompt_tokens, load_s):  # -> lines for stderr
        end = time.perf_counter()
        lines = [f"load: {load_s:.2f} s"]
        if self.first is not None:
            # the first new token comes out of the prompt's forward pass; each later one costs one step
            prompt_s, steps_s = self.first - self.start, end - self.first
            lines.append(f"prompt: {prompt_tokens} tokens in {prompt_s:.2f} s ({prompt_tokens / prompt_s:.1f} tokens/s)")
            rate = f"{(self.count - 1) / steps_s:.1f} tokens/s" if self.count > 1 else "n/a"
            lines.append(f"generation: {self.count} tokens in {end - self.start:.2f} s ({rate} after the first)")
        # ru_maxrss is in KiB on Linux, bytes on macOS
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
        lines.append(f"peak memory: {peak:.0f} MiB")
        return lines


def run(args):
    settings = settings_from(args)
    if args.threads is not None:
        if args.threads < 1:
            raise MinineoError(f"--threads must be >= 1, got {args.threads}")
        set_threads(args.threads)
    prompt = read_prompt(args.prompt)
    started = time.perf_counter()
    model = load(args.model, int8=args.int8)
    load_s = time.perf_counter() - started

    eos = model.config.eos_token_id
    ids, mask = batch_prompts([model.tokenizer.encode(prompt)], eos)
    steps = generate_steps(model, ids, mask, **settings)   # a prompt too long fails here, before any output
    out, clock = Output(stream=not args.no_stream), Clock()
    if not args.no_display_prompt:
        out.write(prompt)
    for piece in detokenize(clock.timed(new[0] for new in steps), model.tokenizer, eos):
        out.write(piece)
    out.finish()
    if args.stats:
        for line in clock.report(ids.shape[1], load_s):
            print(f"minineo: {line}", file=sys.stderr)
    return 0


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        return run(args)
    except MinineoError as e:   # a user mistake: one line. Anything else is a bug and keeps its traceback.
        print(f"minineo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # Ctrl-C: keep what was printed, end its line
        print(flush=True)
        return INTERRUPTED
    except BrokenPipeError:     # `minineo ... | head`: the reader left. Python's recipe: point stdout at
        # /dev/null so that the flush at exit does not fail a second time.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
