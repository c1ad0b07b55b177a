"""`minineo "prompt"` (or `python -m minineo`): print the continuation as it is generated.

Flags follow llama.cpp (-p, -f, -n, --temp, --top-k, --top-p, --repeat-penalty, -s, -t,
--ignore-eos; temperature 0 = greedy, -n -1 = until the context is full, -s -1 = a random seed) and
transformers (--max-new-tokens, --temperature, --repetition-penalty, ...). Its defaults are the
command's own, CLI_TEMPERATURE and CLI_MAX_NEW_TOKENS below, not generate()'s (transformers').
"""
import argparse
import math
import sys
import time
from importlib.metadata import PackageNotFoundError, version

from ..errors import MinineoError, UsageError
from ..text.generation import detokenize, generate_steps, prompt_batch
from ..text.settings import Settings
from .common import Parser, add_model_flags, load_model, number, peak_memory, read_text, run_command

# Unlike generate() (greedy, as transformers), the command samples by default, at llama.cpp's
# temperature: greedy decoding of a small model loops on one phrase, a poor first impression of a text tool.
CLI_TEMPERATURE = 0.8
# A few lines of text at a glance. llama.cpp's own -n default (-1) fills the context: minutes for 2.7B on a CPU.
CLI_MAX_NEW_TOKENS = 100
# A prompt from stdin or -f is read up to this many bytes: `minineo < /dev/zero` must not fill the
# memory. It is far more than any context holds (2048 tokens are ~10 KB of text).
MAX_PROMPT_BYTES = 1 << 20


def parser():
    p = Parser(prog="minineo", description="Generate text with GPT-Neo in plain NumPy.")
    p.add_argument("prompt", nargs="?", help="the text to continue; '-' (or nothing, with piped input): "
                   "read it from stdin; nothing at a terminal: start from <|endoftext|>")
    p.add_argument("-p", "--prompt", dest="prompt_flag", metavar="TEXT", help="the prompt, as llama.cpp takes it")
    p.add_argument("-f", "--file", metavar="PATH", help="read the prompt from a UTF-8 text file")
    add_model_flags(p)
    # a count the user gave is checked as given; the default shrinks to what the context leaves
    p.add_argument("-n", "--max-new-tokens", "--n-predict", metavar="N", default=CLI_MAX_NEW_TOKENS, action=Given,
                   type=number(int, lambda n: n >= 0 or n == -1, "an integer >= 0, or -1 (until the context is full)"),
                   help=f"tokens to generate at most, -1 = until the context is full (default {CLI_MAX_NEW_TOKENS}, "
                        "fewer if the context has less room after the prompt)")
    p.add_argument("--temperature", "--temp", metavar="T", default=CLI_TEMPERATURE,
                   type=number(float, lambda t: 0 <= t < math.inf, "a finite number >= 0"),
                   help=f"sampling temperature, 0 = greedy (default {CLI_TEMPERATURE})")
    p.add_argument("--top-k", metavar="K", default=Settings.top_k,
                   type=number(int, lambda k: k >= 0, "an integer >= 0"),
                   help=f"sample among the k likeliest tokens, 0 = all (default {Settings.top_k})")
    p.add_argument("--top-p", metavar="P", default=Settings.top_p,
                   type=number(float, lambda p: 0 < p <= 1, "a number in (0, 1]"),
                   help=f"sample among the likeliest tokens that make up this probability (default {Settings.top_p})")
    p.add_argument("--repetition-penalty", "--repeat-penalty", metavar="R", default=Settings.repetition_penalty,
                   type=number(float, lambda r: 0 < r < math.inf, "a finite number > 0"),
                   help=f"> 1 makes tokens already in the text less likely (default {Settings.repetition_penalty})")
    p.add_argument("--min-new-tokens", metavar="N", default=Settings.min_new_tokens,
                   type=number(int, lambda n: n >= 0, "an integer >= 0"),
                   help="do not stop at <|endoftext|> before this many tokens")
    p.add_argument("--ignore-eos", action="store_true", help="never stop at <|endoftext|>: generate all -n tokens")
    p.add_argument("-s", "--seed", metavar="SEED", type=number(int, lambda s: s >= -1, "an integer >= 0, or -1 (random)"),
                   help="random seed: the same seed, the same text (default, or -1: random)")
    p.add_argument("--truncate", action="store_true", help="keep the end of a prompt too long for the context")
    p.add_argument("--no-display-prompt", action="store_true", help="print only the generated text")
    p.add_argument("--no-stream", action="store_true", help="print the text at the end instead of as it comes")
    p.add_argument("--stats", action="store_true", help="print load time, speed and peak memory on stderr")
    p.add_argument("--version", action="version", version=f"minineo {_version()}")
    return p


class Given(argparse.Action):  # stores the value, and that the user gave it: `args.given` holds its dest
    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _version():
    try:
        return version("minineo")
    except PackageNotFoundError:   # run from a source tree that was never installed
        return "(not installed)"


def new_tokens(args, prompt_tokens, context):  # -> how many tokens to generate at most
    room = context - prompt_tokens
    if args.max_new_tokens == -1:   # llama.cpp's "until the context is full": what the prompt leaves room for
        if room > 0:
            return room
        if args.truncate:   # keep the prompt's last half-context and fill the other half, as llama.cpp does
            return context // 2
        raise MinineoError(f"-n -1 generates until the context is full, but the prompt's {prompt_tokens} tokens "
                           f"already fill the model's context of {context}; --truncate keeps the prompt's end")
    if "max_new_tokens" in getattr(args, "given", ()):   # the user's own count: generate() checks it
        return args.max_new_tokens
    if 0 < room < CLI_MAX_NEW_TOKENS:   # a default must not be why a call fails: generate what fits
        print(f"minineo: generating {room} tokens, the room the prompt's {prompt_tokens} tokens leave in the "
              f"model's context of {context} (-n sets the count; the default is {CLI_MAX_NEW_TOKENS})",
              file=sys.stderr)
        return room
    if room <= 0 and not args.truncate:
        raise MinineoError(f"the prompt's {prompt_tokens} tokens fill the model's context of {context}: shorten it, "
                           f"or --truncate keeps its last {context - CLI_MAX_NEW_TOKENS} tokens")
    return CLI_MAX_NEW_TOKENS


def settings_from(args, prompt_tokens, context):  # the parsed flags -> generate's settings
    max_new = new_tokens(args, prompt_tokens, context)
    return dict(max_new_tokens=max_new, do_sample=args.temperature > 0,
                temperature=args.temperature if args.temperature > 0 else Settings.temperature,
                top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
                min_new_tokens=max_new if args.ignore_eos else args.min_new_tokens,
                seed=None if args.seed == -1 else args.seed, truncate=args.truncate)


def read_bounded(stream, where):  # a binary stream -> str, at most MAX_PROMPT_BYTES of UTF-8
    return read_text(stream, where, MAX_PROMPT_BYTES, f"{MAX_PROMPT_BYTES} bytes; a prompt is at most "
                     f"{MAX_PROMPT_BYTES} bytes (the models' contexts hold ~10 KB of text)")


def read_prompt(args):
    given = [name for name, value in [("PROMPT", args.prompt), ("-p", args.prompt_flag), ("-f", args.file)]
             if value is not None]
    if len(given) > 1:
        raise UsageError(f"give the prompt one way, not {' and '.join(given)}")
    if args.file is not None:
        try:
            with open(args.file, "rb") as f:
                return read_bounded(f, args.file)
        except OSError as e:
            raise MinineoError(f"{args.file}: {e.strerror.lower()}") from None
    prompt = args.prompt if args.prompt is not None else args.prompt_flag
    if prompt is not None and prompt != "-":
        return prompt
    if sys.stdin is None or sys.stdin.closed:
        if prompt == "-":
            raise MinineoError("stdin is closed: nothing to read the prompt from")
        return ""
    if prompt is None and sys.stdin.isatty():
        return ""   # nothing given: unconditional generation
    # like the shell's $(...), drop the trailing newline that `echo` and editors add
    return read_bounded(sys.stdin.buffer, "stdin").rstrip("\n")


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

    def finish(self):   # also on Ctrl-C: what was generated is printed, streamed or not
        sys.stdout.write("".join(self.held) + "\n")
        sys.stdout.flush()
        self.held = []


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
        peak = peak_memory()
        lines.append(f"peak memory: {peak / 2**20:.0f} MiB" if peak is not None else "peak memory: n/a")
        return lines


def run(args):
    prompt = read_prompt(args)
    started = time.perf_counter()
    model = load_model(args)
    load_s = time.perf_counter() - started

    eos = model.config.eos_token_id
    ids, mask = prompt_batch(model.config, [model.tokenizer.encode(prompt)])
    settings = settings_from(args, ids.shape[1], model.config.max_position_embeddings)
    steps = generate_steps(model, ids, mask, **settings)   # a prompt too long fails here, before any output
    out, clock = Output(stream=not args.no_stream), Clock()
    try:
        if not args.no_display_prompt:
            out.write(prompt)
        for piece in detokenize(clock.timed(new[0] for new in steps), model.tokenizer, eos):
            out.write(piece)
    finally:   # Ctrl-C included: keep what was generated
        out.finish()
    if args.stats:
        for line in clock.report(ids.shape[1], load_s):
            print(f"minineo: {line}", file=sys.stderr)


def main(argv=None):
    # A terminal or pipe that cannot show a character (an ASCII-only locale) gets a replacement
    # character rather than a UnicodeEncodeError halfway through the text.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
    args = parser().parse_args(argv)
    return run_command(run, args)
