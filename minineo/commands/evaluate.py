"""python -m minineo.eval: any lm-eval task on minineo, or the model card's whole table.

    python -m minineo.eval --tasks hellaswag,piqa --model 125M --limit 100
    python -m minineo.eval --tasks my_task --include-path tasks/ --model DIR --output-json out.json
    python -m minineo.eval --card --model 1.3B --data pile=pile-test.jsonl.zst
    python -m minineo.eval --task wikitext --data wikitext.jsonl       # lm-eval's wikitext, on a local file

lm-eval runs the tasks (minineo/text/tasks.py chooses them and their data); minineo's backend
(minineo/text/harness.py) answers its requests; --ray spreads them over Ray actors
(minineo/text/distributed.py) with the same result.
"""
import json
import logging
import math
import os
import socket
from pathlib import Path

from ..errors import MinineoError
from ..fast.threads import set_threads
from .common import Parser, add_model_flags, number, positive_int, run_command

nonnegative_int = number(int, lambda n: n >= 0, "an integer >= 0")


def _import_lm_eval():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise MinineoError('python -m minineo.eval runs lm-evaluation-harness: pip install "lm-eval>=0.4,<0.5" '
                           "(or pip install 'minineo[eval]')") from None
    logging.getLogger("lm_eval").setLevel(logging.ERROR)   # its warnings about our local task files
    from ..text import harness   # noqa: F401  (registers the backend)


def hub_reachable():
    # Without this, `datasets` retries an unreachable Hub for ~25 s per data set before failing.
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        return True
    except OSError:
        return False


def parse_data(values, classic):  # --data: FILE (with --task) or TASK=FILE, repeatable -> {task: path}
    data = {}
    for value in values or []:
        name, sep, path = value.partition("=")
        if not sep:
            if classic is None:
                raise MinineoError(f"--data {value}: name the task it is for, as TASK=FILE (or use --task)")
            name, path = classic, value
        from ..text.tasks import SOURCES
        name = {"lambada": "lambada_openai"}.get(name, name)
        if name not in SOURCES:
            raise MinineoError(f"--data {value}: local data is read for {', '.join(SOURCES)}; for another "
                               "task, write its YAML with dataset_path: json and pass --include-path")
        data[name] = path
    return data


def task_manager(names, include_path):
    """lm-eval's TaskManager: indexing lm-eval's own ~10,000 task files takes ~15 s, so only when a
    name is neither the card's (minineo/text/tasks.py knows their files) nor in --include-path."""
    from lm_eval.tasks import TaskManager
    from ..text.tasks import SOURCES
    manager = TaskManager(include_path=include_path, include_defaults=False)
    if any(n not in SOURCES and n not in manager.all_tasks for n in names):
        manager = TaskManager(include_path=include_path)
        unknown = [n for n in names if n not in SOURCES and n not in manager.all_tasks]
        if unknown:
            raise MinineoError(f"unknown task{'s' * (len(unknown) > 1)} {', '.join(unknown)} (not among lm-eval's "
                               f"{len(manager.all_tasks)} tasks and groups, nor in --include-path)")
    return manager


def spec(name, data, manager, workdir):  # what lm-eval is asked to load for `name`
    from ..text.tasks import SOURCES, task_config
    if name in SOURCES and (name in data or name not in manager.all_tasks):
        return task_config(name, data.get(name), workdir)
    return name


def evaluate(lm, tasks, manager, args):
    import lm_eval
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, task_manager=manager, limit=args.limit,
                                   num_fewshot=args.num_fewshot, bootstrap_iters=0, log_samples=True)


def add_token_perplexity(out, lm):
    """Rolling tasks get token_perplexity beside lm-eval's metrics (the card's Pile PPL)."""
    from ..text.tasks import token_perplexity
    for name, samples in out.get("samples", {}).items():
        if samples and out["configs"][name].get("output_type") == "loglikelihood_rolling":
            out["results"][name]["token_perplexity,none"] = token_perplexity(samples, lm.tok_encode)


def fmt(value, metric):
    if value is None:
        return "-"
    if metric in ("acc", "acc_norm"):
        return f"{100 * value:.2f}%"
    return f"{value:.4f}" if abs(value) < 100 and math.isfinite(value) else f"{value:.5g}"


def card_table(results, missing, model_name, limit):
    from ..text.tasks import CARD, PUBLISHED
    published = PUBLISHED.get(model_name, (None,) * len(CARD))
    lines = [f"{'column':<14} {'lm-eval task':<15} {'metric':<17} {'minineo':>10} {'card':>10}"]
    for (column, task, metric), card in zip(CARD, published):
        value = results.get(task, {}).get(f"{metric},none")
        lines.append(f"{column:<14} {task:<15} {metric:<17} {fmt(value, metric):>10} {fmt(card, metric):>10}")
    lines.append(f"card: {model_name or 'none (not a released GPT-Neo shape)'}; minineo: zero-shot, lm-eval's "
                 f"definitions" + (f", the first {limit} documents of each task" if limit else ""))
    return "\n".join(lines + list(missing.values()))


def write_json(path, out, args, lm):
    record = {"model": lm.pretrained, "int8": lm.int8, "max_length": lm.max_length, "limit": args.limit,
              "num_fewshot": args.num_fewshot, "ray": args.ray,
              **{k: out[k] for k in ("results", "versions", "n-shot", "higher_is_better", "n-samples") if k in out}}
    try:
        Path(path).write_text(json.dumps(record, indent=2, default=str) + "\n")
    except OSError as e:
        raise MinineoError(f"{path}: {(e.strerror or str(e)).lower()}") from None


def run(args):
    from ..text.tasks import CARD, CLASSIC, missing_data_line, released_name, scratch_dir
    classic = CLASSIC.get(args.task) if args.task else None
    data = parse_data(args.data, classic)
    names = ([classic] if classic else list(dict.fromkeys(t for _, t, _ in CARD)) if args.card else
             [t.strip() for t in args.tasks.split(",") if t.strip()])
    if args.include_path is not None and not Path(args.include_path).is_dir():
        raise MinineoError(f"--include-path {args.include_path}: no such directory")
    if classic == "pile" and "pile" not in data:
        raise MinineoError("the Pile is no longer on the Hub: pass the Pile's test split as JSON lines with "
                           "--data (field \"text\"; .jsonl, .gz or .zst)")
    _import_lm_eval()
    if not hub_reachable():
        os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"   # fail at once, use the cache
    with scratch_dir() as workdir:
        manager = task_manager(names, args.include_path)
        specs = [spec(name, data, manager, workdir) for name in names]
        missing = {}
        if args.card:   # each task on its own: those whose data cannot be loaded are left out, and said so
            tasks = []
            for name, one in zip(names, specs):
                try:
                    tasks.extend(manager.load([one])["tasks"].values())
                except (OSError, ValueError) as e:   # datasets' ConnectionError, DatasetNotFoundError, ...
                    missing[name] = missing_data_line(name, e)
            specs = tasks
        from ..text.harness import MinineoLM
        set_threads(args.threads)
        lm = MinineoLM(pretrained=args.model, int8=args.int8, threads=args.threads, batch_size=args.batch_size,
                       ray=args.ray)
        try:
            out = evaluate(lm, specs, manager, args) if specs else {"results": {}, "samples": {}, "configs": {}}
        except (OSError, ValueError) as e:
            if isinstance(e, MinineoError):
                raise
            raise MinineoError(missing_data_line(names[0], e) if len(names) == 1 else
                               missing_data_line(", ".join(names), e)) from None
        finally:
            if lm.pool is not None:
                lm.pool.close()
    add_token_perplexity(out, lm)
    if out["results"]:
        from lm_eval.utils import make_table
        print(make_table(out))
    if any("token_perplexity,none" in result for result in out["results"].values()):
        print("token_perplexity: exp(-log-likelihood / tokens), not an lm-eval metric (the model card's Pile PPL)")
    if args.card:
        print(card_table(out["results"], missing, released_name(lm.model.config), args.limit))
    if args.output_json is not None:
        write_json(args.output_json, out, args, lm)
    return 0


def main(argv=None):
    parser = Parser(prog="python -m minineo.eval",
                    description="Evaluate a model on lm-evaluation-harness tasks, through minineo's backend.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--tasks", metavar="T1,T2", help="lm-eval tasks (or groups), comma-separated")
    which.add_argument("--card", action="store_true",
                       help="the GPT-Neo model card's ten columns, beside the card's numbers")
    which.add_argument("--task", choices=sorted(["wikitext", "lambada", "pile"]),
                       help="one of the three tasks minineo once scored itself: lm-eval's wikitext, "
                            "lambada_openai or the Pile, usually with --data")
    add_model_flags(parser)
    parser.add_argument("--data", metavar="[TASK=]FILE", action="append",
                        help="a local copy of a task's data set, as JSON lines (.gz, .zst too); TASK= names the "
                             "task (any of --card's), and may be left out with --task. Repeatable.")
    parser.add_argument("--include-path", metavar="DIR", help="a folder of lm-eval task YAML files")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="the first N documents of each task")
    parser.add_argument("--num-fewshot", type=nonnegative_int, metavar="K", help="few-shot examples (default: the task's)")
    parser.add_argument("--batch-size", type=positive_int, default=8, metavar="B",
                        help="requests scored together (default 8)")
    parser.add_argument("--ray", metavar="ADDRESS",
                        help="spread the requests over Ray actors: auto (the running cluster), local (start Ray "
                             "here) or HOST:PORT; --threads is then per actor")
    parser.add_argument("--output-json", metavar="PATH", help="write lm-eval's results (its metric names) to PATH")
    args = parser.parse_args(argv)
    return run_command(run, args)

