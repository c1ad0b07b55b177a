"""minineo.text.evaluate against EleutherAI's lm-evaluation-harness (lm-eval 0.4) itself.

lm-eval runs its own task files (wikitext.yaml, lambada_openai.yaml, pile_arxiv.yaml: the same
detokenizer, templates, word and byte counts and aggregations) through `simple_evaluate` with
HFLM, the transformers model, on a random-weight checkpoint with GPT-2's real vocabulary and a
64-token context, so that documents need several rolling windows and long LAMBADA passages are cut.
Only the data source is overridden, to local JSON lines (the Hub is not reachable from CI).
Every metric must agree to 1e-4 relative, and every document's log-likelihood too.
Needs `pip install "torch==2.13.0" "lm-eval[hf]>=0.4,<0.5"`; skipped without it.
"""
import json
import math
import os
import shutil

import pytest

lm_eval = pytest.importorskip("lm_eval")
huggingface = pytest.importorskip("lm_eval.models.huggingface", reason="lm-eval's HFLM needs lm-eval[hf]")
pytest.importorskip("transformers")

import minineo  # noqa: E402
from minineo.text.evaluate import (encode_pair, evaluate, rolling_windows, split_last_word,  # noqa: E402
                                   wikitext_detokenizer)
from minineo.weights.tokenizer import GPT2_BPE  # noqa: E402

from conftest import hf_model  # noqa: E402

CONTEXT = 64
RELATIVE = 1e-4

WIKITEXT = [
    " = Valley Line ( Northshire ) = \n \n The Valley Line is a 42 @.@ 5 km ( 26 @.@ 4 mi ) railway in "
    "Northshire , England . It was opened in 1 @,@ 874 by the Northshire Railway Company , whose "
    "directors ' hopes for coal traffic were never met . \n \n = = History = = \n \n The line 's first "
    "engineer , Thomas Hale , proposed a route along the river ; the board preferred a cheaper one "
    "over the hills . \" It will pay for itself within ten years \" , he wrote in 1871 . It did not . "
    "Passenger numbers peaked at N @,@ 000 a year in 1913 . \n \n = = = Closure = = = \n \n "
    "The line closed to passengers in 1964 and to goods in 1969 ; part of the trackbed is now a "
    "footpath . \n",
    " = Ælfric of Eynsham = \n \n Ælfric ( c. 955 – c. 1010 ) was an English abbot and a prolific "
    "writer in Old English of hagiography , homilies and biblical commentaries . His works are "
    "among the most important sources for the language of the late tenth century . \n \n = = Life = = "
    "\n \n Little is known of his early life . He was educated at Winchester under Æthelwold , and "
    "in 987 moved to Cerne Abbas , where he wrote the Catholic Homilies ; the temperature of the "
    "scriptorium , he complained , was 5 ° C in winter . \n",
    " = Tropical Storm Ana ( 1985 ) = \n \n Tropical Storm Ana was a short @-@ lived storm that "
    "brought gusty winds to Bermuda . It formed on July 15 from a frontal low ; winds reached "
    "60 mph ( 95 km / h ) before it became extratropical on July 19 . [ citation needed ] \n",
]
PASSAGES = [   # LAMBADA-style: the task is the last word
    "She opened the old wooden box and found inside a small brass key that fitted the lock on the attic door",
    "The committee met every Thursday in the back room of the library, and every Thursday the "
    "chairman arrived late, apologised, and asked for the minutes of the last meeting. By spring the "
    "secretary had stopped writing them down, and nobody noticed. When the chairman finally asked "
    "who had taken the minutes, the secretary simply pointed at the empty chair by the window",
    "He waited at the corner for an hour before he admitted that she was not  coming",
    "Tom looked at the map again. The river ran north, the road ran east, and the village they "
    "wanted was somewhere between them. Give me the compass, he said to",
]
PILE = [
    "def add(a, b):\n    \"\"\"Return the sum.\"\"\"\n    return a + b\n\n\nprint(add(2, 3))\n",
    "Abstract. We study the spectral gap of random regular graphs and show that, with high "
    "probability, the second eigenvalue is at most 2√(d−1) + ε. Our proof uses the trace method "
    "together with a new counting argument for tangle-free walks; the bound is tight up to the "
    "constant in ε. Numerical experiments for d = 3, 4, 7 agree with the prediction. " * 2,
    "Short one.",
]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lm-eval-ckpt")
    hf_model(directory, seed=3, vocab_size=50257, bos_token_id=50256, eos_token_id=50256,
             max_position_embeddings=CONTEXT)
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, directory)
    return directory


def greedy_passages(model, n=3):
    """Passages whose last word is what this random model predicts greedily, so that acc is not 0."""
    found = []
    words = PASSAGES[1].split(" ")
    for k in range(4, len(words)):
        context = " ".join(words[:k])
        ids = model.tokenizer.encode(context)[-CONTEXT:]
        token = int(model.logits(model.forward(ids)[-1]).argmax())
        word = model.tokenizer.decode([token])
        if word.startswith(" ") and word[1:].isalpha() and \
                model.tokenizer.encode(context + word)[-len(ids) - 1:] == ids + [token]:
            found.append(context + word)
        if len(found) == n:
            break
    return found


def write_jsonl(path, field, texts):
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def task_yaml(directory, name, include, data, cache, split_override=""):
    tasks = os.path.join(os.path.dirname(lm_eval.__file__), "tasks")
    (directory / f"{name}.yaml").write_text(
        f"include: {tasks}/{include}\ntask: {name}\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n  cache_dir: {cache}\n"
        f"training_split: null\nvalidation_split: null\ntest_split: test\n{split_override}")


@pytest.fixture(scope="module")
def both(checkpoint, tmp_path_factory):
    """{task: (minineo's Result, lm-eval's metrics, lm-eval's per-document log-likelihoods)}"""
    from lm_eval.tasks import TaskManager

    work = tmp_path_factory.mktemp("lm-eval-tasks")
    model = minineo.load(checkpoint)
    passages = PASSAGES + greedy_passages(model)
    data = {"wikitext": write_jsonl(work / "wikitext.jsonl", "page", WIKITEXT),
            "lambada": write_jsonl(work / "lambada.jsonl", "text", passages),
            "pile": write_jsonl(work / "pile.jsonl", "text", PILE)}
    task_yaml(work, "wikitext_local", "wikitext/wikitext.yaml", data["wikitext"], work / "cache")
    task_yaml(work, "lambada_local", "lambada/lambada_openai.yaml", data["lambada"], work / "cache", "tag: []\n")
    task_yaml(work, "pile_local", "pile/pile_arxiv.yaml", data["pile"], work / "cache")

    lm = huggingface.HFLM(pretrained=str(checkpoint), device="cpu", batch_size=4, dtype="float32")
    assert lm.max_length == CONTEXT and lm.prefix_token_id == model.tokenizer.eos_token_id
    out = lm_eval.simple_evaluate(model=lm, tasks=["wikitext_local", "lambada_local", "pile_local"],
                                  task_manager=TaskManager(include_path=str(work), include_defaults=False),
                                  bootstrap_iters=0, log_samples=True)
    found = {}
    for task in ("wikitext", "lambada", "pile"):
        ours = evaluate(model, task, data=data[task])
        theirs = {k.split(",")[0]: v for k, v in out["results"][f"{task}_local"].items()
                  if k.endswith(",none") and "stderr" not in k}
        samples = sorted(out["samples"][f"{task}_local"], key=lambda s: s["doc_id"])
        per_doc = [s["resps"][0][0] if task != "lambada" else tuple(s["resps"][0][0]) for s in samples]
        found[task] = ours, theirs, per_doc
    return found


@pytest.mark.parametrize("task", ["wikitext", "lambada", "pile"])
def test_metrics_equal_lm_eval(both, task):
    ours, theirs, _ = both[task]
    assert set(ours.metrics) == set(theirs), (ours.metrics, theirs)
    for name, value in theirs.items():
        print(f"{task} {name}: minineo {ours.metrics[name]!r}  lm-eval {value!r}")
        assert math.isclose(ours.metrics[name], value, rel_tol=RELATIVE), (name, ours.metrics[name], value)


@pytest.mark.parametrize("task", ["wikitext", "lambada", "pile"])
def test_each_document_equals_lm_eval(both, task):
    ours, _, per_doc = both[task]
    assert len(per_doc) == ours.documents
    for i, ((ll, greedy), theirs) in enumerate(zip(ours.per_document, per_doc)):
        their_ll = theirs[0] if task == "lambada" else theirs
        print(f"{task} document {i}: minineo {ll:.6f}  lm-eval {their_ll:.6f}")
        assert math.isclose(ll, their_ll, rel_tol=RELATIVE), (i, ll, their_ll)
        if task == "lambada":
            assert greedy == theirs[1], i


def test_lambada_acc_is_not_trivially_zero(both):
    ours, theirs, _ = both["lambada"]
    print(f"lambada acc: minineo {ours.metrics['acc']}, lm-eval {theirs['acc']}, {ours.correct} of {ours.documents}")
    assert 0 < ours.correct < ours.documents


def test_documents_need_several_windows(both):
    ours, _, _ = both["wikitext"]
    assert ours.tokens > 3 * CONTEXT   # at least one article spans several 64-token windows


def test_rolling_windows_equal_lm_eval():
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
    for max_length in (1, 2, 3, 4, 7, 64):
        for n in range(0, 3 * max_length + 3):
            tokens = list(range(1, n + 1))
            ids = [0] + tokens   # 0: the prefix token
            expected = [make_disjoint_window(w) for w in get_rolling_token_windows(tokens, 0, max_length, 1)]
            ours = rolling_windows(n, max_length)
            assert len(ours) == len(expected), (n, max_length)
            for (begin, end, first), (context, continuation) in zip(ours, expected):
                # What HFLM feeds the model: (context + continuation)[-(L + 1):][:-1]
                assert ids[begin:end - 1] == (context + continuation)[-(max_length + 1):][:-1]
                assert ids[first:end] == continuation


def test_detokenizer_and_last_word_equal_lm_eval(checkpoint):
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer as theirs
    from lm_eval.utils import apply_template
    for page in WIKITEXT + [" a ' b ' s ' c /' 5/ = = = = x \" y \" { z } [ w ] ° ° N N 's \n x"]:
        assert wikitext_detokenizer(page) == theirs({"page": page})
    lm = huggingface.HFLM(pretrained=str(checkpoint), device="cpu", batch_size=1, dtype="float32")
    tokenizer = minineo.load(checkpoint).tokenizer
    for text in PASSAGES + ["one", "two  spaces", "ends with a space ", "tab\tinside word", "x  y  z"]:
        context = apply_template("{{text.split(' ')[:-1]|join(' ')}}", {"text": text})
        continuation = apply_template("{{' '+text.split(' ')[-1]}}", {"text": text})
        assert split_last_word(text) == (context, continuation)
        if context:
            expected = lm._encode_pair(context, continuation)
        else:   # HFLM.loglikelihood's empty-context case
            cont = lm.tok_encode(continuation)
            expected = ([lm.prefix_token_id], cont)
        assert encode_pair(tokenizer, context, continuation, lm.prefix_token_id) == tuple(map(list, expected)), text
