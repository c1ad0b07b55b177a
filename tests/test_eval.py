"""`python -m minineo.eval`: lm-eval tasks through minineo's backend, on local data (no Hub, no torch).

tests/test_eval_harness.py compares the backend with lm-eval's `hf` backend request for request;
tests/test_eval_ray.py the Ray path. Needs lm-eval (pip install "lm-eval>=0.4,<0.5"); skipped without it.
"""
import gzip
import json
import math
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("lm_eval")

import minineo  # noqa: E402
from minineo.commands.evaluate import main  # noqa: E402
from minineo.text.tasks import CARD, PUBLISHED, read_documents  # noqa: E402
from minineo.weights.hub import BUNDLED  # noqa: E402

from conftest import text_checkpoint  # noqa: E402

HELDOUT = (BUNDLED.parent / "neo-shakespeare-heldout.txt").read_text()
PAGES = [" = The Tempest = \n \n " + " ".join(HELDOUT[2000:3500].split()) + " \n",     # ~400 tokens: 2 windows
         " = Act I = \n The ship , a 1 @,@ 000 @-@ ton vessel , sinks ( in a storm ) . \n"]
PASSAGES = [" ".join(HELDOUT[5000 + 300 * i: 5200 + 300 * i].split()) for i in range(3)]
CHOICES = [{"question": "The capital of France is", "choices": ["Paris", "London", "Rome"], "answer": 0},
           {"question": "To open a jar, you", "choices": ["twist the lid", "shout"], "answer": 0},
           {"question": "Thou art", "choices": ["a villain", "my lord", "the sea"], "answer": 1}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def include_dir(tmp_path_factory):
    """A folder with one multiple-choice task on local data, as a user would write it."""
    directory = tmp_path_factory.mktemp("tasks")
    data = write_jsonl(directory / "choices.jsonl", CHOICES)
    (directory / "choices.yaml").write_text(
        f"task: choices_local\noutput_type: multiple_choice\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files:\n    test: {data}\ntest_split: test\ndoc_to_text: '{{{{question}}}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\nmetric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):   # random weights, GPT-2's vocabulary, a 64-token context
    return text_checkpoint(tmp_path_factory.mktemp("eval-ckpt") / "ckpt", max_position_embeddings=64)


def test_cli_tasks_include_path_output_json(include_dir, checkpoint, tmp_path, capsys):
    out = tmp_path / "out.json"
    assert main(["--tasks", "choices_local", "--include-path", str(include_dir), "--model", str(checkpoint),
                 "--batch-size", "2", "--output-json", str(out)]) == 0
    printed = capsys.readouterr().out
    print(printed)
    assert re.search(r"\|choices_local\s*\|.*\|acc\s*\|", printed)   # lm-eval's table
    record = json.loads(out.read_text())
    acc = record["results"]["choices_local"]["acc,none"]
    assert record["model"] == str(checkpoint) and record["max_length"] == 64
    # acc by hand: the choice with the largest log-likelihood, from the backend itself
    from minineo.text.harness import MinineoLM
    lm, right = MinineoLM(pretrained=str(checkpoint)), 0
    for doc in CHOICES:
        scores = [lm.loglikelihood([Request(doc["question"], " " + c)], disable_tqdm=True)[0][0]
                  for c in doc["choices"]]
        right += scores.index(max(scores)) == doc["answer"]
    print(f"acc {acc}, by hand {right}/{len(CHOICES)}")
    assert acc == right / len(CHOICES)


def test_cli_classic_wikitext_on_a_local_file(tmp_path, capsys):
    data = write_jsonl(tmp_path / "wiki.jsonl", [{"page": p} for p in PAGES])
    assert main(["--task", "wikitext", "--data", str(data), "--output-json", str(tmp_path / "out.json")]) == 0
    print(capsys.readouterr().out)
    result = json.loads((tmp_path / "out.json").read_text())["results"]["wikitext"]
    # The metrics from per-document log-likelihoods, as lm-eval defines them: the detokenized page is
    # scored, the original page's words and bytes divide.
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer
    from minineo.text.harness import MinineoLM
    lm = MinineoLM()
    lls = lm.loglikelihood_rolling([Request(wikitext_detokenizer({"page": p})) for p in PAGES], disable_tqdm=True)
    words, size = sum(len(re.split(r"\s+", p)) for p in PAGES), sum(len(p.encode()) for p in PAGES)
    tokens = sum(len(lm.tok_encode(wikitext_detokenizer({"page": p}))) for p in PAGES)
    assert tokens > lm.max_length   # the first page needs two rolling windows
    expected = {"word_perplexity": math.exp(-sum(lls) / words), "bits_per_byte": -sum(lls) / size / math.log(2),
                "byte_perplexity": math.exp(-sum(lls) / size), "token_perplexity": math.exp(-sum(lls) / tokens)}
    for name, value in expected.items():
        print(f"{name}: command {result[name + ',none']!r}, by hand {value!r}")
        assert math.isclose(result[name + ",none"], value, rel_tol=1e-9)


def test_cli_classic_lambada_gz_and_limit(tmp_path, capsys):
    data = tmp_path / "lambada.jsonl.gz"
    data.write_bytes(gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in PASSAGES).encode()))
    assert main(["--task", "lambada", "--data", str(data), "--limit", "2", "--output-json",
                 str(tmp_path / "out.json")]) == 0
    printed = capsys.readouterr().out
    print(printed)
    record = json.loads((tmp_path / "out.json").read_text())
    assert record["n-samples"]["lambada_openai"]["effective"] == 2 and "perplexity" in printed


def test_card_lists_ten_columns_and_runs_what_it_can(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("minineo.commands.evaluate.hub_reachable", lambda: False)   # as offline: fail fast
    pile = write_jsonl(tmp_path / "pile.jsonl", [{"text": p} for p in PAGES[:1]])
    lambada = write_jsonl(tmp_path / "lambada.jsonl", [{"text": t} for t in PASSAGES[:2]])
    assert main(["--card", "--data", f"pile={pile}", "--data", f"lambada={lambada}"]) == 0
    printed = capsys.readouterr().out
    print(printed)
    rows = {line.split()[0] + (" " + line.split()[1] if line.split()[1] in ("BPB", "PPL", "Acc") else ""): line
            for line in printed.splitlines() if line.split() and line.split()[0] in {c.split()[0] for c, _, _ in CARD}}
    assert len(rows) == 10, rows
    for column in ("Pile BPB", "Pile PPL", "Lambada PPL", "Lambada Acc"):
        assert rows[column].split()[-2] != "-", column       # run on the local copies
    for column in ("Wikitext PPL", "Winogrande", "Hellaswag", "MathQA", "PubMedQA", "PIQA"):
        assert rows[column].split()[-2] == "-", column       # no data here
    for task in ("wikitext", "winogrande", "hellaswag", "mathqa", "pubmedqa", "piqa"):
        line = next(line for line in printed.splitlines() if line.startswith(f"{task}: data set"))
        assert f"--data {task}=FILE.jsonl" in line, line
    assert "card: none (not a released GPT-Neo shape)" in printed


def test_card_table_prints_the_cards_numbers_for_a_released_shape():
    from minineo.commands.evaluate import card_table
    from minineo.text.tasks import released_name
    from minineo.model.config import Config
    config = Config(vocab_size=50257, hidden_size=2048, num_layers=24, num_heads=16, intermediate_size=8192,
                    window_size=256, attention_layers=("global", "local") * 12, max_position_embeddings=2048)
    name = released_name(config)
    table = card_table({"piqa": {"acc,none": 0.5}}, {"hellaswag": "hellaswag: data set ... missing"}, name, 10)
    print(table)
    assert name == "GPT-Neo 1.3B"
    assert any(line.split()[0] == "PIQA" and line.split()[-2:] == ["50.00%", "71.11%"] for line in table.splitlines())
    assert any(line.startswith("Pile BPB") and line.split()[-2:] == ["-", "0.7527"] for line in table.splitlines())
    assert "first 10 documents" in table and table.endswith("hellaswag: data set ... missing")


def test_card_numbers_are_the_cards():
    # A few figures as the cards print them, against a slip in the table's order.
    assert PUBLISHED["GPT-Neo 2.7B"][:3] == (0.7165, 5.646, 11.39)
    assert PUBLISHED["GPT-Neo 1.3B"][:3] == (0.7527, 6.159, 13.10)
    assert PUBLISHED["GPT-Neo 125M"][2:5] == (32.285, 30.266, 0.3736)
    assert [c for c, _, _ in CARD][-3:] == ["MathQA", "PubMedQA", "PIQA"] and len(CARD) == 10


@pytest.mark.parametrize("content, message", [
    ('{"text": "a"}\n{"text": \n', "line 2: not valid JSON"),
    ('{"page": "a"}\n', 'line 1: expected a JSON object with a "text" field'),
    ('["text"]\n', 'line 1: expected a JSON object with a "text" field'),
    ('{"text": 5}\n', 'line 1: "text" is int, not text'),
    ("\n", "no documents to evaluate"),
])
def test_bad_data_is_one_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(minineo.MinineoError, match=re.escape(f"{path}: {message}")):
        read_documents(path, "text")


@pytest.mark.parametrize("argv, message, code", [
    (["--task", "wikitext", "--data", "missing.jsonl"], "missing.jsonl: no such file", 1),
    (["--task", "lambada", "--data", "BAD"], "BAD: line 1: not valid JSON", 1),
    (["--task", "lambada", "--data", "WRONG_FIELD"], 'line 1: expected a JSON object with a "text" field', 1),
    (["--task", "lambada", "--data", "EMPTY"], "no documents to evaluate", 1),
    (["--task", "lambada", "--data", "CORRUPT.gz"], "CORRUPT.gz: cannot be read as gzip-compressed", 1),
    (["--task", "wikitext", "--data", "DEFLATE.jsonl.gz"], "DEFLATE.jsonl.gz: cannot be read as gzip-compressed UTF-8 "
                                                           "JSON lines (Error -3 while decompressing data", 1),
    (["--task", "wikitext", "--data", "TEXT.jsonl.gz"], "TEXT.jsonl.gz: cannot be read as gzip-compressed UTF-8 "
                                                        "JSON lines (Not a gzipped file", 1),
    (["--task", "pile"], "pass the Pile's test split as JSON lines with --data", 1),
    (["--tasks", "piqa", "--data", "x.jsonl"], "--data x.jsonl: name the task it is for", 1),
    (["--tasks", "choices_local", "--data", "mmlu=x.jsonl"], "--data mmlu=x.jsonl: local data is read for", 1),
    (["--tasks", "x", "--include-path", "nowhere"], "--include-path nowhere: no such directory", 1),
    (["--task", "hellaswag"], "argument --task: invalid choice", 2),
    (["--tasks", "piqa", "--card"], "not allowed with argument", 2),
    (["--tasks", "piqa", "--limit", "0"], "argument --limit: expected an integer >= 1", 2),
])
def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch, argv, message, code):
    (tmp_path / "BAD").write_text("{not json\n")
    (tmp_path / "WRONG_FIELD").write_text('{"page": "x"}\n')
    (tmp_path / "EMPTY").write_text("")
    (tmp_path / "CORRUPT.gz").write_bytes(gzip.compress(b'{"text": "a b"}\n' * 50)[:-30])   # cut short
    # gzip's header, then bytes that are not deflate data: zlib.error, which used to escape as a traceback
    (tmp_path / "DEFLATE.jsonl.gz").write_bytes(gzip.compress(b'{"page": "a b"}\n')[:10] + b"\xff" * 40)
    (tmp_path / "TEXT.jsonl.gz").write_text('{"page": "a b"}\n')   # not compressed at all
    monkeypatch.chdir(tmp_path)
    try:
        got = main(argv)
    except SystemExit as e:   # usage mistakes: argparse exits
        got = e.code
    err = capsys.readouterr().err
    assert got == code and err.startswith("minineo: error: ") and err.count("\n") == 1 and message in err, err


def test_unknown_task_is_one_line(include_dir, capsys):
    assert main(["--tasks", "no_such_task_anywhere", "--include-path", str(include_dir)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown task no_such_task_anywhere" in err, err


def test_without_lm_eval_or_ray_is_one_line(tmp_path, capsys, monkeypatch, include_dir):
    monkeypatch.setitem(sys.modules, "ray", None)          # as if Ray were not installed
    assert main(["--tasks", "choices_local", "--include-path", str(include_dir), "--ray", "auto"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "ray>=2.9"' in err, err
    monkeypatch.setitem(sys.modules, "lm_eval", None)      # as if lm-eval were not installed
    assert main(["--tasks", "piqa"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and 'pip install "lm-eval>=0.4,<0.5"' in err, err


def test_python_dash_m_minineo_eval(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"text": PASSAGES[0]}])
    run = subprocess.run([sys.executable, "-m", "minineo.eval", "--task", "lambada", "--data", str(data),
                          "--int8", "--threads", "1"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "lambada_openai" in run.stdout and "acc" in run.stdout and "Traceback" not in run.stderr


def test_a_nan_log_likelihood_stops_with_the_request_named(numpy_checkpoint):
    from minineo.text.harness import MinineoLM
    from conftest import rewrite_tensors
    directory = numpy_checkpoint(seed=1, vocab_size=50257, eos_token_id=50256)   # GPT-2's tokens

    def poison(tensors):   # one NaN in the final layer norm: every log-likelihood becomes NaN
        name = next(n for n in tensors if "ln_f" in n)
        tensors[name] = tensors[name].copy()
        tensors[name].flat[0] = np.nan
        return tensors
    rewrite_tensors(directory, poison)
    lm = MinineoLM(pretrained=str(directory))
    with pytest.raises(minineo.MinineoError, match=r"request 'Thou art' \+ ' a villain': the log-likelihood is "
                                                   r"nan \(.*its weight ln_f\.\w+ holds NaN or inf"):
        lm.loglikelihood([Request("Thou art", " a villain")], disable_tqdm=True)
    with pytest.raises(minineo.MinineoError, match=r"document 'O Romeo, Romeo': the log-likelihood is nan"):
        lm.loglikelihood_rolling([Request("O Romeo, Romeo")], disable_tqdm=True)


class Request:   # what lm-eval's Instance gives a backend: .args
    def __init__(self, *args):
        self.args = args


@pytest.mark.parametrize("model_args, message", [
    ("batch_size=x", "model argument batch_size: expected an integer >= 1, got 'x'"),
    ("threads=0", "model argument threads: expected an integer >= 1, got 0"),
    ("int8=maybe", "model argument int8: expected true or false, got 'maybe'"),
    ("max_length=100000", "model argument max_length: 100000 is more than the model's max_position_embeddings"),
    ("temperature=1", "unknown model argument temperature; minineo takes pretrained, int8"),
])
def test_bad_model_arguments_are_one_clear_error(model_args, message):
    from minineo.text.harness import MinineoLM
    with pytest.raises(minineo.MinineoError, match=re.escape(message)):
        MinineoLM.create_from_arg_string(model_args)


def test_model_arguments_from_a_string(checkpoint):
    from minineo.text.harness import MinineoLM
    lm = MinineoLM.create_from_arg_string(f"pretrained={checkpoint},int8=true,threads=1,batch_size=3,max_length=32")
    assert (lm.pretrained, lm.int8, lm.threads, lm.batch, lm.max_length) == (str(checkpoint), True, 1, 3, 32)
    assert type(lm.model.params["blocks"][0]["mlp"]["c_fc"]["w"]).__name__ == "Int8Weight"
