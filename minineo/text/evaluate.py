"""The numbers on GPT-Neo's model card, computed the way EleutherAI's lm-evaluation-harness computes them.

    result = evaluate(model, "wikitext")                      # from the Hub (needs `datasets`)
    result = evaluate(model, "lambada", data="lambada.jsonl", limit=100)
    result.metrics   # {"perplexity": ..., "acc": ...}

Every definition below is lm-eval 0.4's (lm_eval/models/huggingface.py, lm_eval/utils.py,
lm_eval/api/metrics.py and the task files under lm_eval/tasks/), so the numbers are lm-eval's, and
tests/test_eval_lm_eval.py checks them against lm-eval itself. Three tasks:

  wikitext  WikiText-2, raw, by document (EleutherAI/wikitext_document_level, wikitext-2-raw-v1,
            test split: 62 Wikipedia articles). Each article is detokenized (" @-@ " -> "-", ...),
            scored as a whole, and reported per word and per byte of the *original* article.
  pile      The Pile's test split (field `text`): scored and counted as it is.
  lambada   LAMBADA as OpenAI prepared it (EleutherAI/lambada_openai, test split: 5,153 passages):
            the model reads a passage without its last word and is scored on that word.

Scoring a whole document (wikitext, pile): "rolling windows". The model reads at most L tokens
(L = max_position_embeddings: 2048 for the released models). The document is prefixed with
<|endoftext|>, so that its first token is scored too, and cut into disjoint windows of L scored
tokens. The last window is filled up with earlier tokens as context, so it is L tokens long as
well (L = 4 here; `e` is <|endoftext|>):

    ids        e  t0 t1 t2 t3 t4 t5 t6 t7 t8 t9
    window 0  [e  t0 t1 t2]                      reads 4, scores t0 t1 t2 t3
    window 1              [t3 t4 t5 t6]          reads 4, scores t4 t5 t6 t7 (t4 sees only t3)
    window 2                    [t5 t6 t7 t8]    reads 4, scores t8 t9 (t5 t6 t7 are context)

Every token is scored exactly once; log P(document) is the sum over its tokens, in float64.

Scoring the last word (lambada): the passage "... he said to his friend" becomes the context
"... he said to his" and the continuation " friend" (the last word, with the space before it). The
pair is tokenised as HFLM does: the whole text is encoded and the context's tokens are split off the
front, so the continuation's tokens are the ones the whole text really has. Its log-probability is
the sum over its tokens, and the passage is "correct" when every one of them is the greedy choice
(the argmax). A passage longer than L + 1 tokens loses tokens from the left.

The metrics, from per-document log-likelihoods ll_i (natural log, <= 0):

    word_perplexity = exp(-sum ll_i / sum words_i)      words_i = len(re.split(r"\\s+", doc_i))
    byte_perplexity = exp(-sum ll_i / sum bytes_i)      bytes_i = len(doc_i.encode("utf-8"))
    bits_per_byte   = -sum ll_i / sum bytes_i / ln 2
    perplexity      = exp(-mean ll_i)                   (lambada: a mean over passages, not tokens)
    acc             = the fraction of passages whose last word is the greedy prediction

`token_perplexity` = exp(-sum ll_i / tokens scored) is not an lm-eval metric; it is the "Pile PPL"
of GPT-Neo's model card, so Result has it beside the others.

Documents are scored one at a time, each window a single forward pass; per-document results are
kept at their document's index and reduced in document order, so `ray=` (minineo/text/distributed.py,
the same scoring spread over a cluster) gives the very same floats.
"""
import gzip
import json
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import MinineoError
from .perplexity import LOGIT_ROWS, token_nll


# ---- The tasks --------------------------------------------------------------------------------

def wikitext_detokenizer(page):
    """lm-eval's wikitext_detokenizer (tasks/wikitext/preprocess_wikitext.py), line for line: WikiText
    is stored tokenized ("1 @,@ 000", "word , word"); this puts it back into ordinary text."""
    string = page
    # contractions
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)   # kept as lm-eval has it (it matches only "/' 5/")
    # number separators
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    # punctuation
    string = string.replace(" : ", ": ")
    string = string.replace(" ; ", "; ")
    string = string.replace(" . ", ". ")
    string = string.replace(" ! ", "! ")
    string = string.replace(" ? ", "? ")
    string = string.replace(" , ", ", ")
    # double brackets
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    # miscellaneous
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def split_last_word(text):  # -> (context, continuation), as tasks/lambada/lambada_openai.yaml
    words = text.split(" ")   # doc_to_text: "{{text.split(' ')[:-1]|join(' ')}}"
    return " ".join(words[:-1]), " " + words[-1]   # doc_to_target: "{{' '+text.split(' ')[-1]}}"


@dataclass(frozen=True)
class Task:
    name: str
    lm_eval_name: str   # the task (or group) in lm-eval
    field: str          # the JSON field that holds a document
    hub: tuple          # (dataset, config, split) that lm-eval reads, or None
    kind: str           # "rolling" (a whole document) or "last_word"
    metrics: tuple
    target: object = None   # document -> the text that is scored (rolling tasks; None: the document itself)


ROLLING_METRICS = ("word_perplexity", "byte_perplexity", "bits_per_byte")
TASKS = {
    "wikitext": Task("wikitext", "wikitext", "page",
                     ("EleutherAI/wikitext_document_level", "wikitext-2-raw-v1", "test"),
                     "rolling", ROLLING_METRICS, wikitext_detokenizer),
    "lambada": Task("lambada", "lambada_openai", "text", ("EleutherAI/lambada_openai", "default", "test"),
                    "last_word", ("perplexity", "acc")),
    # lm-eval's pile_* tasks read EleutherAI/pile, which the Hub no longer serves: a local file only.
    "pile": Task("pile", "pile", "text", None, "rolling", ROLLING_METRICS),
}
ALIASES = {"lambada_openai": "lambada", "wikitext-2": "wikitext"}


def get_task(name):
    if isinstance(name, Task):
        return name
    task = TASKS.get(ALIASES.get(name, name))
    if task is None:
        raise MinineoError(f"unknown task {name!r}; the tasks are {', '.join(TASKS)}")
    return task


# ---- Rolling windows and the last word: which tokens the model reads, which it scores ---------

def rolling_windows(n_tokens, max_length):
    """lm-eval's rolling windows (utils.get_rolling_token_windows with context_len=1, then
    make_disjoint_window) over ids = [eos] + tokens -> [(begin, end, first)]: the model reads
    ids[begin:end - 1] and scores ids[first:end], each token once. No tokens, no windows."""
    spans, scored = [], 0            # scored: tokens of the document scored so far
    while scored < n_tokens:
        end = min(scored + max_length, n_tokens) + 1     # + 1: ids has the prefix in front
        spans.append((max(0, end - 1 - max_length), end, scored + 1))
        scored = end - 1
    return spans


def encode_pair(tokenizer, context, continuation, prefix_id):
    """(context, continuation) -> their token ids, as HFLM.loglikelihood and _encode_pair do."""
    if context == "":   # nothing to condition on: the prefix token is the context
        ids = tokenizer.encode(continuation)
        return ([prefix_id], ids) if ids[:1] != [prefix_id] else (ids[:1], ids[1:])
    n_spaces = len(context) - len(context.rstrip())   # "a b " + "c" is scored as "a b" + " c"
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids):]


def last_word_span(n_context, n_total, max_length):  # -> (begin, end, first) over ids = context + continuation
    # As _loglikelihood_tokens: the model reads (context + continuation)[-(L + 1):][:-1].
    return max(0, n_total - 1 - max_length), n_total, n_context


# ---- Scoring ----------------------------------------------------------------------------------

@dataclass
class Request:
    """One document, tokenised and ready to score: the model reads ids[begin:end - 1] and scores
    ids[first:end] for each (begin, end, first) in spans. words and bytes: what the metrics divide by."""
    ids: np.ndarray
    spans: list
    words: int = 0
    bytes: int = 0

    @property
    def tokens(self):  # tokens scored
        return sum(end - first for _, end, first in self.spans)


def prepare(task, model, document):
    """One document (its text) -> a Request."""
    L = model.config.max_position_embeddings
    eos = model.tokenizer.eos_token_id   # lm-eval's prefix token: the tokenizer's bos, which is eos for GPT-Neo
    if task.kind == "rolling":
        target = task.target(document) if task.target else document
        tokens = model.tokenizer.encode(target)
        return Request(np.array([eos] + tokens, np.int64), rolling_windows(len(tokens), L),
                       words=len(re.split(r"\s+", document)), bytes=len(document.encode("utf-8")))
    context, continuation = encode_pair(model.tokenizer, *split_last_word(document), eos)
    if not 1 <= len(continuation) <= L:   # lm-eval asserts the same
        raise MinineoError(f"lambada: the last word of {document[:40]!r}... is {len(continuation)} tokens; "
                           f"it must be 1 to {L} (the model's context)")
    ids = context + continuation
    return Request(np.array(ids, np.int64), [last_word_span(len(context), len(ids), L)])


def score_span(model, ids, begin, end, first):
    """-> (log P(ids[first:end] | ids[begin:first]) in float64, whether each of those tokens is the argmax)"""
    # Position i predicts token i + 1, so the span's last token is only a target, never an input.
    h = model.forward(ids[begin:end - 1])[first - 1 - begin:]    # [n, d]: the positions that predict
    targets = ids[first:end]                                       # [n]
    loglikelihood, greedy = 0.0, True
    for i in range(0, len(targets), LOGIT_ROWS):   # logits for LOGIT_ROWS positions at a time
        logits = model.logits(h[i:i + LOGIT_ROWS])
        loglikelihood -= float(token_nll(logits, targets[i:i + LOGIT_ROWS]).sum())
        greedy = greedy and bool((logits.argmax(axis=-1) == targets[i:i + LOGIT_ROWS]).all())
    return loglikelihood, greedy


def score_request(model, request):  # -> (loglikelihood, greedy) of one document
    loglikelihood, greedy = 0.0, True
    for span in request.spans:
        ll, g = score_span(model, request.ids, *span)
        loglikelihood, greedy = loglikelihood + ll, greedy and g
    return loglikelihood, greedy


def document_loglikelihood(model, text):
    """log P(text) by lm-eval's rolling windows, <|endoftext|> first: what wikitext and pile sum up."""
    return score_request(model, prepare(TASKS["pile"], model, text))[0]


def last_word_loglikelihood(model, text):
    """(log P(last word | the rest), whether it is the greedy prediction) of one LAMBADA passage."""
    return score_request(model, prepare(TASKS["lambada"], model, text))


# ---- Metrics ----------------------------------------------------------------------------------

def _exp(x):
    return math.exp(x) if x < 709.0 else math.inf   # a random model's perplexity can pass float64's range


def rolling_metrics(loglikelihoods, words, bytes):
    """lm-eval's weighted_perplexity and bits_per_byte: sums first (in the order given), then one division."""
    ll = sum(loglikelihoods)
    return {"word_perplexity": _exp(-ll / sum(words)),
            "byte_perplexity": _exp(-ll / sum(bytes)),
            "bits_per_byte": -ll / sum(bytes) / math.log(2)}


def last_word_metrics(loglikelihoods, greedy):
    """lm-eval's perplexity aggregation (exp of minus the mean log-likelihood) and acc (a mean)."""
    return {"perplexity": _exp(-sum(loglikelihoods) / len(loglikelihoods)),
            "acc": sum(map(int, greedy)) / len(greedy)}


@dataclass
class Result:
    task: str
    metrics: dict          # lm-eval's names -> values
    documents: int
    tokens: int            # tokens scored
    words: int | None      # the words and bytes the rolling metrics divide by (None for lambada)
    bytes: int | None
    seconds: float         # tokenising and scoring
    loglikelihood: float   # the sum over documents, in nats
    correct: int | None = None   # lambada: passages whose last word is the greedy prediction
    per_document: list = field(default_factory=list, repr=False)   # [(loglikelihood, greedy)] by document

    @property
    def token_perplexity(self):  # not an lm-eval metric: the model card's "Pile PPL"
        return _exp(-self.loglikelihood / self.tokens) if self.tokens else math.nan


def summarize(task, requests, results, seconds):
    """Per-document results, in document order -> Result."""
    loglikelihoods = [ll for ll, _ in results]
    if task.kind == "rolling":
        words, bytes = sum(r.words for r in requests), sum(r.bytes for r in requests)
        metrics, correct = rolling_metrics(loglikelihoods, [r.words for r in requests], [r.bytes for r in requests]), None
    else:
        words = bytes = None
        metrics, correct = last_word_metrics(loglikelihoods, [g for _, g in results]), sum(g for _, g in results)
    return Result(task.name, metrics, len(requests), sum(r.tokens for r in requests), words, bytes, seconds,
                  sum(loglikelihoods), correct, list(results))


# ---- Documents: a JSON-lines file, a list, or the Hub ------------------------------------------

def _open_lines(path):
    if str(path).endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    if str(path).endswith(".zst"):   # the Pile ships as test.jsonl.zst
        try:
            import zstandard
        except ImportError:
            raise MinineoError(f'{path}: reading .zst needs zstandard: pip install zstandard '
                               f'(or decompress it first: zstd -d {path})') from None
        import io
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb")), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_documents(path, field, limit=None):
    """The `field` of each line of a JSON-lines file (one JSON object a line; blank lines skipped)."""
    documents = []
    try:
        with _open_lines(path) as lines:
            for number, line in enumerate(lines, 1):
                if limit is not None and len(documents) >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MinineoError(f"{path}, line {number}: not valid JSON ({e.msg}, column {e.colno})") from None
                if not isinstance(record, dict) or field not in record:
                    raise MinineoError(f'{path}, line {number}: expected a JSON object with a "{field}" field')
                if not isinstance(record[field], str):
                    raise MinineoError(f'{path}, line {number}: "{field}" is {type(record[field]).__name__}, not text')
                documents.append(record[field])
    except OSError as e:
        raise MinineoError(f"{path}: {(e.strerror or str(e)).lower()}") from None
    except (UnicodeDecodeError, EOFError) as e:
        raise MinineoError(f"{path}: not UTF-8 JSON lines ({e})") from None
    return documents


def hub_documents(task, limit=None):
    """The task's test documents from the Hugging Face Hub, through `datasets`, as lm-eval reads them."""
    if task.hub is None:
        raise MinineoError(f"{task.name}: lm-eval's dataset (EleutherAI/pile) is no longer on the Hub; pass "
                           f"the Pile's test split as JSON lines with --data (a \"text\" field a line, e.g. "
                           f"test.jsonl or test.jsonl.zst)")
    try:
        import datasets
    except ImportError:
        raise MinineoError(f"reading {task.name} from the Hub needs the datasets library: pip install datasets "
                           f"(or pass a JSON-lines file with --data / data=)") from None
    path, config, split = task.hub
    try:
        data = datasets.load_dataset(path, config, split=split if limit is None else f"{split}[:{limit}]")
    except Exception as e:   # no network, no such dataset, ...: many exception types, one line for the user
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MinineoError(f"could not load {path} ({config}, {split}) from the Hub: {message}") from None
    return list(data[task.field])


def get_documents(task, documents=None, data=None, limit=None):
    if documents is not None and data is not None:
        raise MinineoError("give documents or data, not both")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise MinineoError(f"limit must be an integer >= 1, got {limit!r}")
    if documents is not None:
        texts = [d[task.field] if isinstance(d, dict) else d for d in documents][:limit]
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None:
            raise MinineoError(f"documents: expected text (or dicts with a \"{task.field}\" field), got {type(bad).__name__}")
    elif data is not None:
        texts = read_documents(data, task.field, limit)
    else:
        texts = hub_documents(task, limit)
    if not texts:
        raise MinineoError(f"{data or 'documents'}: no documents to evaluate")
    return texts


# ---- Everything together ----------------------------------------------------------------------

def evaluate(model, task, documents=None, data=None, limit=None, progress=None, ray=None):
    """Evaluate `model` on `task` ("wikitext", "lambada" or "pile") -> Result.

    The documents: `documents` (a list of texts, or of dicts with the task's field), or `data` (a
    JSON-lines file, one document a line: field "page" for wikitext, "text" for lambada and pile;
    .gz and .zst are read too), or else the Hub (wikitext, lambada; needs `datasets`). `limit`: the
    first N documents only. progress(tokens_done, tokens_total) is called after each document.
    ray: None (this process), an address ("auto", "local", "ray://host:10001") or a
    distributed.Cluster: the documents are scored by Ray actors, with the same result."""
    task = get_task(task)
    texts = get_documents(task, documents, data, limit)
    start = time.perf_counter()
    requests = [prepare(task, model, text) for text in texts]
    if ray is None:
        results = score_all(model, requests, progress)
    else:
        from .distributed import score_on_ray
        results = score_on_ray(model, requests, ray, progress, score_request=score_request)
    return summarize(task, requests, results, time.perf_counter() - start)


def score_all(model, requests, progress=None):  # -> [(loglikelihood, greedy)], one document after another
    results, done, total = [], 0, sum(r.tokens for r in requests)
    for request in requests:
        results.append(score_request(model, request))
        done += request.tokens
        if progress is not None:
            progress(done, total)
    return results
