"""python -m minineo.perplexity FILE: the perplexity of a UTF-8 text file under a model."""
import time

from ..text.sliding_window import score_tokens
from .common import Parser, add_model_flags, load_model, positive_int, progress_bar, read_text_file, run_command


def run(args):
    text = read_text_file(args.file, too_long="; score a text this long in parts")
    model = load_model(args)
    ids = model.tokenizer.encode(text)
    start = time.perf_counter()
    progress, close = progress_bar("window", leave=False)
    try:
        score = score_tokens(model, ids, args.context, args.stride, progress=progress)
    finally:
        close()
    seconds = time.perf_counter() - start
    print(f"perplexity     {score.perplexity:.4f}")
    print(f"tokens scored  {score.tokens} of {len(ids)} "
          f"({score.windows} window{'s' * (score.windows != 1)}, context {score.context}, stride {score.stride})")
    print(f"nll            {score.nll / score.tokens:.4f} nats per token")
    print(f"time           {seconds:.1f} s ({score.tokens / seconds:.0f} tokens/s)")


def parser():
    p = Parser(prog="python -m minineo.perplexity",
               description="Token-level perplexity of a UTF-8 text file, by sliding windows "
                           "(as Hugging Face's perplexity guide).")
    p.add_argument("file", help="the text to score")
    add_model_flags(p)
    p.add_argument("--context", type=positive_int, metavar="N", help="tokens per window (default: the model's "
                   "max_position_embeddings, 2048 for the released models)")
    p.add_argument("--stride", type=positive_int, metavar="S", help="tokens from one window's start to the "
                   "next (default: context / 4); stride = context gives disjoint windows")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))
