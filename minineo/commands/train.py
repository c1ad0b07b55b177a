"""python -m minineo.train --data FILE.txt --out DIR: train a GPT-Neo in NumPy, from scratch or from a model."""
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
from threadpoolctl import ThreadpoolController

from ..errors import MinineoError, UsageError
from ..fast.threads import physical_cores
from ..train.grads import hub_named
from ..train.loop import Settings, copy_tokenizer, model_config, new_model, read_checkpoint, split_tokens, train, trainable
from ..weights import load
from ..weights.tokenizer import GPT2_BPE, Tokenizer
from .common import Parser, number, positive_int, progress_bar, read_text_file, run_command

SHAPE_FLAGS = ("layers", "hidden_size", "heads", "window")


def settings_from(args):
    defaults = Settings()
    steps = args.steps or defaults.steps
    return Settings(steps=steps, batch_size=args.batch_size, context=args.context, lr=args.lr,
                    warmup=min(100, steps // 10) if args.warmup is None else args.warmup,
                    accumulate=args.accumulate, eval_every=args.eval_every, save_every=args.save_every,
                    log_every=args.log_every, seed=args.seed)


def starting_model(args):  # -> (model, settings, resume state or None)
    out = Path(args.out)
    if args.resume:
        model, settings, state = read_checkpoint(out)
        return model, replace(settings, steps=args.steps or settings.steps), state
    if out.exists() and not out.is_dir():
        raise MinineoError(f"{out}: exists and is not a directory")
    if out.exists() and any(out.iterdir()) and not args.force:
        raise MinineoError(f"{out}: exists and is not empty; use --force to write into it, or --resume to continue it")
    if args.init_from is not None:
        given = [f"--{flag.replace('_', '-')}" for flag in SHAPE_FLAGS if getattr(args, flag) is not None]
        if given:
            raise UsageError(f"{' '.join(given)}: the model's shape comes from --init-from {args.init_from}")
        model = trainable(load(args.init_from, fast=False))
        if args.context > model.config.max_position_embeddings:
            raise MinineoError(f"--context {args.context} is longer than {args.init_from}'s "
                               f"max_position_embeddings ({model.config.max_position_embeddings})")
        return model, settings_from(args), None
    layers, width, heads, window = (getattr(args, f) or d for f, d in zip(SHAPE_FLAGS, (2, 64, 4, 16)))
    if width % heads:
        raise UsageError(f"--heads {heads} does not divide --hidden-size {width}: each head gets an equal share")
    if window > args.context:
        raise UsageError(f"--window {window} is larger than --context {args.context}: a local layer would "
                           "see every token, as a global one does")
    tokenizer = Tokenizer.from_dir(GPT2_BPE)
    config = model_config(tokenizer.vocab_size, layers, width, heads, window, args.context, tokenizer.eos_token_id)
    return new_model(config, tokenizer, args.seed), settings_from(args), None


def run(args):
    text = read_text_file(args.data, empty=": nothing to train on")
    ThreadpoolController().limit(limits=args.threads or physical_cores(), user_api="blas")
    model, settings, state = starting_model(args)
    tokens = np.array(model.tokenizer.encode(text), np.int64)
    if len(tokens) < 2 * settings.context:
        raise MinineoError(f"{args.data}: {len(tokens)} tokens, shorter than the {2 * settings.context} needed for "
                           f"--context {settings.context} (windows to train on, and one held out)")
    train_tokens, heldout_tokens = split_tokens(tokens, settings.context)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    copy_tokenizer(model, out)
    weights = sum(w.size for w in hub_named(model.params).values())
    print(f"training {weights / 1e6:.2f} M weights on {len(train_tokens)} tokens "
          f"({len(heldout_tokens)} held out), {settings.steps} steps of {settings.batch_size * settings.accumulate}"
          f" x {settings.context} tokens", file=sys.stderr)
    progress, close = progress_bar("step")
    try:
        train(model, train_tokens, heldout_tokens, settings, out, resume=state,
              log=lambda line: print(line, flush=True), progress=progress)
    finally:
        close()
    print(f"saved {out}: python -m minineo -m {out} \"...\" generates from it", file=sys.stderr)


def parser():
    p = Parser(prog="python -m minineo.train",
               description="Train a GPT-Neo in NumPy on a UTF-8 text file, from scratch or from a model (--init-from). "
                           "DIR becomes a model in the Hub layout, checkpointed every --save-every steps.")
    p.add_argument("--data", required=True, metavar="FILE.txt", help="the text to train on (its last tenth is held out)")
    p.add_argument("--out", required=True, metavar="DIR", help="where the model and its checkpoints go")
    p.add_argument("--force", action="store_true", help="write into an --out that exists")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--init-from", metavar="MODEL", help="fine-tune this model (a directory, Hub id or 125M) "
                   "instead of a new one")
    p.add_argument("--steps", type=positive_int, help="optimizer steps (default 1000; with --resume, the run's own)")
    p.add_argument("--layers", type=positive_int, help="layers, alternately global and local (default 2)")
    p.add_argument("--hidden-size", type=positive_int, metavar="D", help="width (default 64)")
    p.add_argument("--heads", type=positive_int, help="attention heads (default 4)")
    p.add_argument("--window", type=positive_int, help="keys a local layer sees (default 16)")
    p.add_argument("--context", type=positive_int, default=64, help="tokens per training window (default 64)")
    p.add_argument("--batch-size", type=positive_int, default=8, help="windows per micro-batch (default 8)")
    p.add_argument("--accumulate", type=positive_int, default=1, help="micro-batches per step (default 1)")
    p.add_argument("--lr", type=number(float, lambda x: 0 < x < 1e6, "a number > 0"), default=1e-3,
                   help="peak learning rate (default 1e-3)")
    p.add_argument("--warmup", type=number(int, lambda n: n >= 0, "an integer >= 0"),
                   help="warm-up steps (default a tenth of --steps, at most 100)")
    p.add_argument("--eval-every", type=positive_int, default=100, metavar="N", help="steps between held-out losses")
    p.add_argument("--save-every", type=positive_int, default=100, metavar="N", help="steps between checkpoints")
    p.add_argument("--log-every", type=positive_int, default=10, metavar="N", help="steps between `step N loss L` lines")
    p.add_argument("--seed", type=int, default=0, help="the seed of the weights and of the batches")
    p.add_argument("-t", "--threads", type=positive_int, metavar="N",
                   help="threads for the matrix products (default: one per physical core)")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))
