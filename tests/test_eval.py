"""minineo.text.evaluate and `python -m minineo.eval`, on their own (no lm-eval, no Ray, no torch).

tests/test_eval_lm_eval.py compares the numbers with lm-eval itself; tests/test_eval_ray.py the Ray path.
"""
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

import minineo
from minineo.commands.evaluate import main
from minineo.errors import MinineoError
from minineo.text.evaluate import (Request, encode_pair, evaluate, last_word_metrics, last_word_span,
                                   read_documents, rolling_metrics, rolling_windows, score_request,
                                   split_last_word, wikitext_detokenizer)
from minineo.weights.hub import BUNDLED

HELDOUT = (BUNDLED.parent / "neo-shakespeare-heldout.txt").read_text()
PAGES = [" = The Tempest = \n \n " + " ".join(HELDOUT[2000:3500].split()) + " \n",     # ~400 tokens: 2 windows
         " = Act I = \n The ship , a 1 @,@ 000 @-@ ton vessel , sinks ( in a storm ) . \n"]
PASSAGES = [" ".join(HELDOUT[5000 + 300 * i: 5200 + 300 * i].split()) for i in range(3)]


@pytest.fixture(scope="module")
def bundled():
    return minineo.load()


def log_softmax64(logits):
    x = logits.astype(np.float64)
    return x - x.max(-1, keepdims=True) - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True))


# ---- Rolling windows ---------------------------------------------------------------------------

def test_rolling_windows_as_drawn_in_the_docstring():
    # ids = e t0 .. t9 (indices 0..10), L = 4: reads [e t0 t1 t2], [t3 t4 t5 t6], [t5 t6 t7 t8]
    assert rolling_windows(10, 4) == [(0, 5, 1), (4, 9, 5), (6, 11, 9)]
    assert rolling_windows(0, 4) == []
    assert rolling_windows(3, 4) == [(0, 4, 1)]


@pytest.mark.parametrize("max_length", [1, 2, 3, 5, 8])
def test_rolling_windows_score_every_token_once_with_the_tokens_before_it(max_length):
    for n in range(0, 4 * max_length + 2):
        spans = rolling_windows(n, max_length)
        scored = [i for _, end, first in spans for i in range(first, end)]
        assert scored == list(range(1, n + 1)), (n, scored)   # ids[1:] = the document, each token once, in order
        for begin, end, first in spans:
            reads = end - 1 - begin
            assert 1 <= first - begin and reads <= max_length            # something before each scored token
            assert reads == min(max_length, n)                           # every window as long as it can be
            assert begin == 0 or first - begin >= 1                       # context is the tokens just before


def test_document_loglikelihood_is_the_sum_over_windows(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint(seed=1, max_position_embeddings=16))   # V = 300, L = 16
    ids = np.random.default_rng(0).integers(0, 299, 40)
    request = Request(np.concatenate([[299], ids]), rolling_windows(len(ids), 16))
    ll, _ = score_request(model, request)
    # By hand: every window run on its own, every scored token's log-probability from its own row.
    expected = 0.0
    for begin, end, first in request.spans:
        logp = log_softmax64(model(request.ids[begin:end - 1]))
        expected += sum(logp[i - 1 - begin, request.ids[i]] for i in range(first, end))
    print(f"minineo {ll!r}, by hand {expected!r}")
    assert len(request.spans) == 3 and request.tokens == 40
    assert math.isclose(ll, expected, rel_tol=1e-6)


# ---- The last word -----------------------------------------------------------------------------

def test_last_word_split_and_tokens(bundled):
    assert split_last_word("he said to his friend") == ("he said to his", " friend")
    assert split_last_word("two  spaces") == ("two ", " spaces")
    assert split_last_word("one") == ("", " one")
    tok = bundled.tokenizer
    context, continuation = encode_pair(tok, "two ", " spaces", tok.eos_token_id)   # the space moves over
    assert context == tok.encode("two") and context + continuation == tok.encode("two  spaces")
    assert encode_pair(tok, "", " one", tok.eos_token_id) == ([tok.eos_token_id], tok.encode(" one"))
    # Too long: the model reads the last L tokens before the last one, as HFLM cuts from the left.
    assert last_word_span(300, 303, 256) == (46, 303, 300)
    assert last_word_span(10, 12, 256) == (0, 12, 10)


def test_last_word_loglikelihood_and_greedy_by_hand(bundled):
    text = PASSAGES[0]
    context, continuation = encode_pair(bundled.tokenizer, *split_last_word(text), bundled.tokenizer.eos_token_id)
    ids = np.array(context + continuation)
    logits = bundled(ids[:-1])[len(context) - 1:]
    expected = sum(log_softmax64(logits)[i, t] for i, t in enumerate(continuation))
    result = evaluate(bundled, "lambada", documents=[text])
    ll, greedy = result.per_document[0]
    assert math.isclose(ll, expected, rel_tol=1e-6)   # float32 logits of 1 row or of many: last bits differ
    assert greedy == bool((logits.argmax(-1) == continuation).all())
    assert result.tokens == len(continuation) and result.metrics["perplexity"] == pytest.approx(math.exp(-ll))


# ---- Metrics, counts, detokenizer --------------------------------------------------------------

def test_metrics_on_hand_made_numbers():
    m = rolling_metrics([-10.0, -20.0], words=[5, 10], bytes=[20, 40])
    assert m["word_perplexity"] == pytest.approx(math.exp(2.0))       # 30 nats / 15 words
    assert m["byte_perplexity"] == pytest.approx(math.exp(0.5))       # 30 nats / 60 bytes
    assert m["bits_per_byte"] == pytest.approx(0.5 / math.log(2))
    m = last_word_metrics([-1.0, -3.0, -2.0, -2.0], [True, False, True, False])
    assert m == {"perplexity": pytest.approx(math.exp(2.0)), "acc": 0.5}   # a mean over passages, not tokens
    assert rolling_metrics([-1e6], [1], [1])["word_perplexity"] == math.inf


def test_counts_use_the_original_page_and_the_scored_text_is_detokenized(bundled):
    page = " = Café = \n A 1 @,@ 000 @-@ word line , ( here ) . \n"
    assert wikitext_detokenizer(page) == " = Café =\nA 1,000-word line, (here).\n"
    result = evaluate(bundled, "wikitext", documents=[{"page": page}])
    assert result.words == len(re.split(r"\s+", page)) == 17   # as lm-eval: the "" at each end counts too
    assert result.bytes == len(page.encode("utf-8")) == len(page) + 1
    assert result.tokens == len(bundled.tokenizer.encode(wikitext_detokenizer(page)))
    assert result.token_perplexity == pytest.approx(math.exp(-result.loglikelihood / result.tokens))


def test_evaluate_limit_and_progress(bundled):
    calls = []
    result = evaluate(bundled, "pile", documents=PAGES + ["x y"], limit=2, progress=lambda *a: calls.append(a))
    assert result.documents == 2 and len(calls) == 2
    assert calls[-1] == (result.tokens, result.tokens) and calls[0][0] < calls[1][0]
    assert result.tokens > bundled.config.max_position_embeddings   # the first page needs two windows


# ---- Data and errors ---------------------------------------------------------------------------

def test_read_documents(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b", "meta": {}}\n{"text": "c"}\n')
    assert read_documents(path, "text") == ["a", "b", "c"]
    assert read_documents(path, "text", limit=2) == ["a", "b"]


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": \n', "line 2: not valid JSON"),
    ('{"page": "a"}\n', 'line 1: expected a JSON object with a "text" field'),
    ('["text"]\n', 'line 1: expected a JSON object with a "text" field'),
    ('{"text": 5}\n', 'line 1: "text" is int, not text'),
    ("\n", "no documents to evaluate"),
])
def test_bad_data_is_one_clear_error(bundled, tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(MinineoError, match=message.replace("(", r"\(").replace("[", r"\[")):
        evaluate(bundled, "lambada", data=path)


def test_other_user_mistakes(bundled, tmp_path, monkeypatch):
    with pytest.raises(MinineoError, match="no such file"):
        evaluate(bundled, "wikitext", data=tmp_path / "missing.jsonl")
    with pytest.raises(MinineoError, match="unknown task 'hellaswag'"):
        evaluate(bundled, "hellaswag", documents=["x"])
    with pytest.raises(MinineoError, match="no longer on the Hub"):
        evaluate(bundled, "pile")
    with pytest.raises(MinineoError, match="limit must be"):
        evaluate(bundled, "pile", documents=["x"], limit=0)
    monkeypatch.setitem(sys.modules, "datasets", None)     # as if `datasets` were not installed
    with pytest.raises(MinineoError, match="pip install datasets"):
        evaluate(bundled, "wikitext")
    monkeypatch.setitem(sys.modules, "ray", None)          # as if Ray were not installed
    with pytest.raises(MinineoError, match=r'pip install "ray>=2.9"'):
        evaluate(bundled, "pile", documents=["x y"], ray="auto")


# ---- The command line --------------------------------------------------------------------------

def write_jsonl(path, field, texts):
    path.write_text("".join(json.dumps({field: t}) + "\n" for t in texts))
    return path


def test_cli_wikitext(tmp_path, capsys, bundled):
    data = write_jsonl(tmp_path / "wiki.jsonl", "page", PAGES)
    assert main(["--task", "wikitext", "--data", str(data), "--output-json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    print(out)
    for line in ("word_perplexity", "byte_perplexity", "bits_per_byte", "token perplexity", "documents        2:", "time"):
        assert line in out
    record = json.loads((tmp_path / "out.json").read_text())
    assert set(record["metrics"]) == {"word_perplexity", "byte_perplexity", "bits_per_byte"}
    assert record["documents"] == 2 and record["max_length"] == 256
    assert record["metrics"]["word_perplexity"] == pytest.approx(math.exp(-record["loglikelihood"] / record["words"]))
    assert record["metrics"]["bits_per_byte"] == pytest.approx(-record["loglikelihood"] / record["bytes"] / math.log(2))
    again = evaluate(bundled, "wikitext", data=data)
    assert record["metrics"] == again.metrics and record["loglikelihood"] == again.loglikelihood
    assert (record["tokens"], record["words"], record["bytes"]) == (again.tokens, again.words, again.bytes)


def test_cli_lambada(tmp_path, capsys):
    data = write_jsonl(tmp_path / "lambada.jsonl", "text", PASSAGES)
    assert main(["--task", "lambada", "--data", str(data), "--limit", "2",
                 "--output-json", str(tmp_path / "out.json")]) == 0
    out = capsys.readouterr().out
    print(out)
    assert "perplexity" in out and "acc" in out and "documents        2:" in out
    record = json.loads((tmp_path / "out.json").read_text())
    assert set(record["metrics"]) == {"perplexity", "acc"} and record["documents"] == 2
    assert record["metrics"]["acc"] == record["correct"] / 2


@pytest.mark.parametrize("argv, message, code", [
    (["--task", "wikitext", "--data", "missing.jsonl"], "missing.jsonl: no such file", 1),
    (["--task", "lambada", "--data", "BAD"], "line 1: not valid JSON", 1),
    (["--task", "lambada", "--data", "WRONG_FIELD"], 'line 1: expected a JSON object with a "text" field', 1),
    (["--task", "lambada", "--data", "EMPTY"], "no documents to evaluate", 1),
    (["--task", "pile"], "pass the Pile's test split as JSON lines with --data", 1),
    (["--task", "hellaswag"], "argument --task: invalid choice", 2),
    (["--task", "wikitext", "--limit", "0"], "argument --limit: expected an integer >= 1", 2),
])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message, code):
    (tmp_path / "BAD").write_text("{not json\n")
    (tmp_path / "WRONG_FIELD").write_text('{"page": "x"}\n')
    (tmp_path / "EMPTY").write_text("")
    monkeypatch.chdir(tmp_path)
    try:
        got = main(argv)
    except SystemExit as e:   # usage mistakes: argparse exits
        got = e.code
    err = capsys.readouterr().err
    assert got == code and err.startswith("minineo: error: ") and err.count("\n") == 1 and message in err, err


def test_cli_without_ray_is_one_line(tmp_path, capsys, monkeypatch):
    data = write_jsonl(tmp_path / "d.jsonl", "text", ["a b c"])
    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["--task", "pile", "--data", str(data), "--ray", "auto"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "ray>=2.9"' in err


def test_python_dash_m_minineo_eval(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", "text", PASSAGES[:1])
    run = subprocess.run([sys.executable, "-m", "minineo.eval", "--task", "lambada", "--data", str(data),
                          "--int8", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "acc" in run.stdout and run.stderr == ""   # stderr is not a terminal: no progress bar
