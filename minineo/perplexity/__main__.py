"""python -m minineo.perplexity FILE: the perplexity of a UTF-8 text file under a model."""
import argparse
import sys
import time
from pathlib import Path

from ..errors import MinineoError
from ..model import load
from ..threads import set_threads
from . import score_tokens


def read_text(path):  # -> str, exactly the file's characters (no newline translation)
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise MinineoError(f"{path}: {e.strerror.lower()}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MinineoError(f"{path}: not UTF-8 text (byte {e.start} cannot be decoded)")
    if not text:
        raise MinineoError(f"{path}: the file is empty")
    return text


def progress_bar(stream, width=30):  # -> progress(done, total) drawing one line that updates in place
    start = time.perf_counter()

    def show(done, total):
        if total < 2:   # one window: nothing to watch
            return
        elapsed = time.perf_counter() - start
        left = elapsed / done * (total - done)
        filled = width * done // total
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} windows, "
                     f"{elapsed:.0f} s, {left:.0f} s left ")
        if done == total:
            stream.write("\n")
        stream.flush()
    return show


def run(args):
    text = read_text(args.file)
    if args.threads is not None:
        if args.threads < 1:
            raise MinineoError(f"--threads must be at least 1, got {args.threads}")
        set_threads(args.threads)
    model = load(args.model, int8=args.int8)
    ids = model.tokenizer.encode(text)
    start = time.perf_counter()
    score = score_tokens(model, ids, args.context, args.stride, progress=progress_bar(sys.stderr))
    seconds = time.perf_counter() - start
    print(f"perplexity     {score.perplexity:.4f}")
    print(f"tokens scored  {score.tokens} of {len(ids)} "
          f"({score.windows} window{'s' * (score.windows != 1)}, context {score.context}, stride {score.stride})")
    print(f"nll            {score.nll / score.tokens:.4f} nats per token")
    print(f"time           {seconds:.1f} s ({score.tokens / seconds:.0f} tokens/s)")


class Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, as every other minineo error, instead of usage + message
        self.exit(2, f"minineo: error: {message} (see --help)\n")


def main(argv=None):
    parser = Parser(prog="python -m minineo.perplexity",
                    description="Token-level perplexity of a UTF-8 text file, by sliding windows "
                                "(as Hugging Face's perplexity guide).")
    parser.add_argument("file", help="the text to score")
    parser.add_argument("-m", "--model", metavar="NAME",
                        help="model directory, Hub id, or 125M / 1.3B / 2.7B (default: the bundled model)")
    parser.add_argument("--context", type=int, metavar="N", help="tokens per window (default: the model's "
                        "max_position_embeddings, 2048 for the released models)")
    parser.add_argument("--stride", type=int, metavar="S", help="tokens from one window's start to the "
                        "next (default: context / 4); stride = context gives disjoint windows")
    parser.add_argument("--int8", action="store_true", help="int8 weights: a quarter of the memory, a little less accurate")
    parser.add_argument("-t", "--threads", type=int, metavar="N",
                        help="threads for the matrix products (default: one per core)")
    args = parser.parse_args(argv)
    try:
        run(args)
        return 0
    except MinineoError as e:   # a user mistake: one line. Anything else is a bug and keeps its traceback.
        print(f"minineo: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:   # Ctrl-C: end the progress bar's line
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
