"""Which lm-eval tasks to run, and on which data: the model card's columns, and local copies of data sets.

lm-eval defines every task (prompts, few-shot handling, metrics); minineo only chooses them and,
where the Hub cannot be reached or no longer serves a data set (the Pile), points a task at a local
JSON-lines file: the task's own YAML, with its data set replaced by the file as the split it is
evaluated on. The file is read and checked here first (one JSON object a line; .gz and .zst too),
so that a broken file is one line naming it, not a traceback from `datasets`.

GPT-Neo's model card (EleutherAI/gpt-neo-125M, -1.3B, -2.7B on the Hugging Face Hub) reports ten
numbers, all from lm-evaluation-harness, zero-shot:

    Pile BPB, Pile PPL, Wikitext PPL, Lambada PPL, Lambada Acc, Winogrande, Hellaswag   ("Linguistic Reasoning")
    MathQA, PubMedQA, PIQA                                                          ("Physical and Scientific Reasoning")

The card's "Pile PPL" is per token, which is not an lm-eval metric: token_perplexity() computes it
from the same run's per-document log-likelihoods and the documents' token counts.
"""
import gzip
import io
import json
import math
import os
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from ..errors import MinineoError


@dataclass(frozen=True)
class Source:
    yaml: str          # the task's file under lm_eval/tasks/
    dataset: str       # what it reads from the Hub, in words
    fields: str        # what a local copy's lines hold


SOURCES = {   # the tasks of the card, and where their data come from
    "pile": Source("pile/pile_arxiv.yaml", "EleutherAI/pile (no longer served by the Hub)", '"text"'),
    "wikitext": Source("wikitext/wikitext.yaml", "EleutherAI/wikitext_document_level, wikitext-2-raw-v1, test",
                       '"page"'),
    "lambada_openai": Source("lambada/lambada_openai.yaml", "EleutherAI/lambada_openai, test", '"text"'),
    "winogrande": Source("winogrande/default.yaml", "allenai/winogrande, winogrande_xl, validation",
                         '"sentence", "option1", "option2", "answer"'),
    "hellaswag": Source("hellaswag/hellaswag.yaml", "Rowan/hellaswag, validation",
                        '"ctx_a", "ctx_b", "activity_label", "endings", "label"'),
    "mathqa": Source("mathqa/mathqa.yaml", "regisss/math_qa, test", '"Problem", "options", "correct"'),
    "pubmedqa": Source("pubmedqa/pubmedqa.yaml", "bigbio/pubmed_qa, pubmed_qa_labeled_fold0_source, test",
                       '"QUESTION", "CONTEXTS", "final_decision"'),
    "piqa": Source("piqa/piqa.yaml", "baber/piqa, validation", '"goal", "sol1", "sol2", "label"'),
}
# `--task` before lm-eval: the three tasks minineo scored by hand, and their lm-eval names
CLASSIC = {"wikitext": "wikitext", "lambada": "lambada_openai", "pile": "pile"}

# (column, task, metric) in the card's order
CARD = [("Pile BPB", "pile", "bits_per_byte"), ("Pile PPL", "pile", "token_perplexity"),
        ("Wikitext PPL", "wikitext", "word_perplexity"), ("Lambada PPL", "lambada_openai", "perplexity"),
        ("Lambada Acc", "lambada_openai", "acc"), ("Winogrande", "winogrande", "acc"),
        ("Hellaswag", "hellaswag", "acc"), ("MathQA", "mathqa", "acc"), ("PubMedQA", "pubmedqa", "acc"),
        ("PIQA", "piqa", "acc")]
# The cards' numbers (accuracies as fractions); None where a card has none. Models are told apart by shape.
PUBLISHED = {
    "GPT-Neo 125M": (None, None, 32.285, 30.266, 0.3736, 0.5043, 0.2867, 0.2278, 0.5510, 0.6306),
    "GPT-Neo 1.3B": (0.7527, 6.159, 13.10, 7.498, 0.5723, 0.5501, 0.3866, 0.2405, 0.5440, 0.7111),
    "GPT-Neo 2.7B": (0.7165, 5.646, 11.39, 5.626, 0.6222, 0.5650, 0.4273, 0.2472, 0.5754, 0.7214),
}
SHAPES = {(768, 12): "GPT-Neo 125M", (2048, 24): "GPT-Neo 1.3B", (2560, 32): "GPT-Neo 2.7B"}


def released_name(config):  # -> "GPT-Neo 1.3B" for a released model's shape, else None
    return SHAPES.get((config.hidden_size, config.num_layers))


# ---- Local data ---------------------------------------------------------------------------------

def _open_lines(path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if str(path).endswith(".zst"):   # the Pile ships as test.jsonl.zst
        try:
            import zstandard
        except ImportError:
            raise MinineoError(f"{path}: reading .zst needs zstandard: pip install zstandard "
                               f"(or decompress it first: zstd -d {path})") from None
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_documents(path, field=None):
    """The JSON objects of a JSON-lines file, one a line (blank lines skipped); each must hold `field`
    as text when it is given. Any problem is a MinineoError naming the file (and the line)."""
    documents = []
    try:
        with _open_lines(path) as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    document = json.loads(line)
                except json.JSONDecodeError:
                    raise MinineoError(f"{path}: line {number}: not valid JSON") from None
                if not isinstance(document, dict) or (field is not None and field not in document):
                    what = f'a JSON object with a "{field}" field' if field else "a JSON object"
                    raise MinineoError(f"{path}: line {number}: expected {what}")
                if field is not None and not isinstance(document[field], str):
                    raise MinineoError(f'{path}: line {number}: "{field}" is '
                                       f"{type(document[field]).__name__}, not text")
                documents.append(document)
    except FileNotFoundError:
        raise MinineoError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise MinineoError(f"{path}: is a directory, not a JSON-lines file") from None
    except (gzip.BadGzipFile, zlib.error, EOFError, UnicodeDecodeError, OSError) as e:
        # a .gz that is not gzip, whose deflate data is broken (zlib.error) or cut short; bytes that are not UTF-8
        raise MinineoError(f"{path}: cannot be read as {'gzip-compressed ' * str(path).endswith('.gz')}"
                           f"UTF-8 JSON lines ({e})") from None
    if not documents:
        raise MinineoError(f"{path}: no documents to evaluate")
    return documents


def lm_eval_tasks_dir():
    import lm_eval
    return Path(lm_eval.__file__).parent / "tasks"


def task_config(name, data=None, workdir=None):
    """lm-eval's config of a card task (a dict), reading `data` (a local JSON-lines file) if given.
    The file is checked and copied, decompressed, into workdir, which `datasets` then reads."""
    from lm_eval.tasks._yaml_loader import load_yaml   # lm-eval's own loader: includes, !function
    source = SOURCES[name]
    config = dict(load_yaml(lm_eval_tasks_dir() / source.yaml, resolve_func=True))
    for key in ("tag", "group"):
        config.pop(key, None)
    config["task"] = name
    if name == "pile":   # pile_arxiv.yaml, with the whole Pile as its data
        config["dataset_name"] = None
    if data is not None:
        field = {"wikitext": "page", "lambada_openai": "text", "pile": "text"}.get(name)
        copy = Path(workdir) / f"{name}.jsonl"
        copy.write_text("".join(json.dumps(d) + "\n" for d in read_documents(data, field)), encoding="utf-8")
        config.update(dataset_path="json", dataset_name=None, training_split=None, validation_split=None,
                      test_split="test", fewshot_split=None,
                      dataset_kwargs={"data_files": {"test": str(copy)}, "cache_dir": str(Path(workdir) / "cache")})
    return config


def missing_data_line(name, error):
    """One line: which data set could not be read, why, and how to give a local copy."""
    source = SOURCES.get(name)
    reason = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    if source is None:
        return f"{name}: its data could not be loaded ({reason})"
    return (f"{name}: data set {source.dataset} could not be loaded ({reason}); give a local copy with "
            f"--data {name}=FILE.jsonl (JSON lines holding {source.fields})")


def token_perplexity(samples, tok_encode):
    """exp(-total log-likelihood / tokens) over a rolling task's logged samples: the card's "Pile PPL"."""
    total = sum(sample["resps"][0][0] for sample in samples)
    tokens = sum(len(tok_encode(sample["arguments"][0][0])) for sample in samples)
    return math.exp(-total / tokens) if -total / tokens < 709 else math.inf


def scratch_dir():
    return tempfile.TemporaryDirectory(prefix="minineo-eval-", dir=os.environ.get("TMPDIR"))
