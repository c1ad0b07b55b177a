"""python -m minineo.eval --task wikitext|lambada|pile: a model card's numbers, as lm-eval computes them.

The math is minineo/text/evaluate.py; --ray spreads the documents over a Ray cluster
(minineo/text/distributed.py) and gives the same result.
"""
import json
from pathlib import Path

from ..errors import MinineoError
from ..text.evaluate import TASKS, evaluate, get_documents, get_task
from ..weights import load
from .common import Parser, add_model_flags, load_model, positive_int, progress_bar, run_command


def source_of(task, args):  # -> what was read, in words
    if args.data is not None:
        return str(args.data)
    path, config, split = task.hub
    return f"{path} ({config}, {split} split)"


def report(task, result, args):
    print(f"task             {task.name} (lm-eval: {task.lm_eval_name}), {source_of(task, args)}")
    for name, value in result.metrics.items():
        print(f"{name:<16} {value:.4f}")
    if task.kind == "rolling":
        print(f"token perplexity {result.token_perplexity:.4f} (not an lm-eval metric: exp(-loglikelihood / tokens))")
        print(f"documents        {result.documents:,}: {result.tokens:,} tokens scored, "
              f"{result.words:,} words, {result.bytes:,} bytes")
    else:
        print(f"documents        {result.documents:,}: {result.correct:,} last words predicted, "
              f"{result.tokens:,} tokens scored")
    done, unit = (result.tokens, "tokens scored") if task.kind == "rolling" else (result.documents, "passages")
    print(f"time             {result.seconds:.1f} s ({done / max(result.seconds, 1e-9):,.1f} {unit}/s)")


def write_json(path, task, result, args, max_length):
    record = {
        "task": task.name, "lm_eval_task": task.lm_eval_name, "data": source_of(task, args), "limit": args.limit,
        "model": args.model, "int8": args.int8, "max_length": max_length, "ray": args.ray,
        "metrics": result.metrics,   # lm-eval's names
        # what they were computed from: metrics = f(loglikelihood, words / bytes / documents)
        "loglikelihood": result.loglikelihood, "documents": result.documents, "tokens": result.tokens,
        "words": result.words, "bytes": result.bytes, "correct": result.correct,
        "token_perplexity": result.token_perplexity if task.kind == "rolling" else None,
        "seconds": result.seconds,
    }
    try:
        Path(path).write_text(json.dumps(record, indent=2) + "\n")
    except OSError as e:
        raise MinineoError(f"{path}: {(e.strerror or str(e)).lower()}") from None


def run(args, closers):
    task = get_task(args.task)
    documents = get_documents(task, data=args.data, limit=args.limit)   # a bad file fails before the model loads
    if args.ray is None:
        model = load_model(args)
        cluster = None
    else:
        from ..text.distributed import Cluster
        # The actors load the model with --int8 and --threads; this process only tokenises, so it
        # maps the weights (no quantizing) for the tokenizer and config.
        model = load(args.model)
        cluster = Cluster(args.ray, model=args.model, int8=args.int8, threads=args.threads)
    show, close = progress_bar("tok", desc=task.name, unit_scale=True, dynamic_ncols=True)
    closers.append(close)
    result = evaluate(model, task, documents, progress=show, ray=cluster)
    close()
    report(task, result, args)
    if args.output_json is not None:
        write_json(args.output_json, task, result, args, model.config.max_position_embeddings)
    return 0


def main(argv=None):
    parser = Parser(prog="python -m minineo.eval",
                    description="Evaluate a model as EleutherAI's lm-evaluation-harness does: WikiText-2 "
                                "(word/byte perplexity, bits per byte), LAMBADA (perplexity, accuracy) or "
                                "the Pile (word/byte perplexity, bits per byte).")
    parser.add_argument("--task", required=True, choices=sorted(TASKS), help="what to evaluate on")
    add_model_flags(parser)
    parser.add_argument("--data", metavar="PATH",
                        help="the documents as JSON lines, one a line (field \"page\" for wikitext, \"text\" "
                             "for lambada and pile; .gz and .zst too); default: the Hub, through `datasets`")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="evaluate the first N documents only")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="score on Ray actors: auto (the running cluster), local (start Ray here) or "
                             "HOST:PORT; --threads is then per actor (default: as many as here)")
    parser.add_argument("--output-json", metavar="PATH",
                        help="write the metrics (lm-eval's names) and the counts behind them to PATH")
    args = parser.parse_args(argv)
    closers = []
    return run_command(lambda a: run(a, closers), args, on_interrupt=lambda: [c() for c in closers])


if __name__ == "__main__":
    raise SystemExit(main())
