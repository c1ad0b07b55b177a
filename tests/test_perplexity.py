"""Sliding-window perplexity against the same loop run with transformers (Hugging Face's perplexity
guide), on random checkpoints and on the bundled model; and the CLI as a user runs it."""

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.errors import MinineoError
from minineo.weights.hub import BUNDLED
from minineo.text.sliding_window import score_tokens, windows
from conftest import hf_model, text_checkpoint

# The package's `perplexity` attribute is the function; this is the module behind it.
from minineo.text import sliding_window as perplexity_module
ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
HELDOUT = BUNDLED.parent / "neo-shakespeare-heldout.txt"
RELATIVE = 1e-4


def guide_perplexity(model, ids, context, stride):
    """The HF perplexity guide's loop on a GPTNeoForCausalLM -> (total nll, tokens scored). The
    guide's outputs.loss is a mean over each window's labels; the same shifted cross-entropy summed
    instead gives the exact total."""
    torch = pytest.importorskip("torch")
    nll, tokens, prev_end = 0.0, 0, 0
    for begin in range(0, len(ids), stride):
        end = min(begin + context, len(ids))
        trg_len = end - prev_end   # may be different from stride on the last window
        input_ids = torch.tensor(ids[begin:end])[None]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        with torch.no_grad():
            logits = model(input_ids).logits
        labels = target_ids[0, 1:]   # the model's internal shift: position i predicts token i + 1
        nll += torch.nn.functional.cross_entropy(logits[0, :-1].double(), labels, ignore_index=-100,
                                                 reduction="sum").item()
        tokens += int((labels != -100).sum())
        prev_end = end
        if end == len(ids):
            break
    return nll, tokens


def assert_same_perplexity(score, reference, what):
    nll, tokens = reference
    ours, theirs = score.perplexity, math.exp(nll / tokens)
    print(f"{what}: perplexity {ours:.6f} vs transformers {theirs:.6f}, relative difference "
          f"{abs(ours / theirs - 1):.2g}; {score.tokens} tokens in {score.windows} windows")
    assert score.tokens == tokens, f"{what}: scored {score.tokens} tokens, transformers {tokens}"
    assert abs(ours / theirs - 1) <= RELATIVE, f"{what}: perplexity {ours} vs transformers {theirs}"
    assert abs(score.nll / nll - 1) <= RELATIVE


# (tokens, context, stride); the model has 32 positions and local layers with a window of 5
CASES = {
    "stride = context (disjoint)": (77, 32, 32),
    "stride = context, a last window of one token": (65, 32, 32),
    "stride < context": (77, 32, 8),
    "stride does not divide the length": (80, 24, 7),
    "stride 1": (24, 16, 1),
    "text = context": (32, 32, 16),
    "text shorter than context": (19, 32, 8),
    "two tokens": (2, 32, 8),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ppl")
    ref = hf_model(directory, max_position_embeddings=32, window_size=5)
    return minineo.load(directory), ref


@pytest.mark.parametrize("name", CASES)
def test_matches_the_guide_with_transformers(tiny, name):
    ours, ref = tiny
    n, context, stride = CASES[name]
    ids = np.random.default_rng(n).integers(0, 300, n)
    assert_same_perplexity(score_tokens(ours, ids, context, stride), guide_perplexity(ref, ids, context, stride), name)


def test_logits_made_a_few_rows_at_a_time(tiny, monkeypatch):
    ours, ref = tiny
    monkeypatch.setattr(perplexity_module, "LOGIT_ROWS", 3)   # 31 scored positions: 11 pieces
    ids = np.random.default_rng(1).integers(0, 300, 50)
    assert_same_perplexity(score_tokens(ours, ids, 32, 10), guide_perplexity(ref, ids, 32, 10), "3 rows at a time")


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_a_non_finite_window_stops_with_its_name(tiny, monkeypatch, loss):
    # never averaged into the result: the third of the windows (begin 16, end 48) is named
    ours, _ = tiny
    real = perplexity_module.window_nll
    monkeypatch.setattr(perplexity_module, "window_nll",
                        lambda model, ids, begin, end, first: loss if begin == 16 else real(model, ids, begin, end, first))
    ids = np.random.default_rng(2).integers(0, 300, 60)
    with pytest.raises(MinineoError, match=r"window 3 of 5 \(tokens 16\.\.47\): the model computed NaN or inf values"):
        score_tokens(ours, ids, 32, 8)


def test_each_token_after_the_first_scored_once():
    for n in (2, 5, 31, 64, 65, 100):
        for context in (2, 3, 16, 64):
            for stride in {1, 2, context // 2 or 1, context - 1 or 1, context}:
                spans = windows(n, context, stride)
                scored = [t for _, end, first in spans for t in range(first, end)]
                # disjoint windows cannot score their first token: nothing comes before it
                expected = [t for t in range(1, n) if not (stride == context and t % context == 0)]
                assert scored == expected, (n, context, stride)
                assert all(end - begin <= context and first > begin for begin, end, first in spans)
                assert [begin for begin, _, _ in spans] == list(range(0, stride * len(spans), stride))
                assert spans[-1][1] == n or (n - 1) % stride == 0   # reaches the end, or drops a one-token window


def test_default_context_and_stride(tiny):
    ours, _ = tiny
    score = score_tokens(ours, np.arange(70) % 300)
    assert (score.context, score.stride) == (32, 8)   # max_position_embeddings, and a quarter of it


def test_text_through_the_tokenizer(tmp_path):
    ref = hf_model(tmp_path, vocab_size=50257, bos_token_id=50256, eos_token_id=50256, max_position_embeddings=40)
    model = minineo.load(tmp_path)
    text = ("Now is the winter of our discontent\nMade glorious summer by this sun of York;\n"
            "And all the clouds that lour'd upon our house\nIn the deep bosom of the ocean buried.")
    ids = model.tokenizer.encode(text)
    assert len(ids) > 20
    ppl = minineo.text_perplexity(model, text, context=16, stride=5)
    nll, tokens = guide_perplexity(ref, ids, 16, 5)
    print(f"text: perplexity {ppl:.6f} vs transformers {math.exp(nll / tokens):.6f}")
    assert isinstance(ppl, float) and abs(ppl / math.exp(nll / tokens) - 1) <= RELATIVE


def test_bundled_model_on_heldout_text():
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    ours = minineo.load()
    ref = transformers.GPTNeoForCausalLM.from_pretrained(BUNDLED, dtype=torch.float32).eval()
    ids = ours.tokenizer.encode(HELDOUT.read_text(encoding="utf-8"))[:500]
    context = min(256, ours.config.max_position_embeddings)
    assert_same_perplexity(score_tokens(ours, ids, context, 100), guide_perplexity(ref, ids, context, 100),
                           "bundled model, held-out text")


@pytest.mark.parametrize("kwargs, message", [
    (dict(stride=0), "stride must be an integer from 1 to the context (32), got 0"),
    (dict(stride=33), "stride must be an integer from 1 to the context (32), got 33"),
    (dict(context=16, stride=17), "stride must be an integer from 1 to the context (16), got 17"),
    (dict(context=33), "max_position_embeddings (32), got 33"),
    (dict(context=1), "context must be an integer from 2"),
    (dict(context=16.0), "context must be an integer"),
    (dict(text=""), "the text is 0 tokens long; perplexity needs at least 2"),
    (dict(text="a"), "the text is 1 token long"),
    (dict(text=[1, 2, 3]), "text must be a str, got list"),
])
def test_bad_input(tiny, kwargs, message):
    ours, _ = tiny
    text = kwargs.pop("text", "hello there")
    with pytest.raises(MinineoError) as error:
        minineo.text_perplexity(ours, text, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    return text_checkpoint(tmp_path_factory.mktemp("ppl-cli"), max_position_embeddings=32)


@pytest.fixture
def text_file(tmp_path):
    path = tmp_path / "text.txt"
    path.write_text("To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
                    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n")
    return path


def run_cli(*args):
    done = subprocess.run([sys.executable, "-m", "minineo.perplexity", *map(str, args)], capture_output=True,
                          env=ENV, cwd=ROOT, timeout=120)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_cli_prints_perplexity_tokens_and_time(text_model, text_file):
    rc, out, err = run_cli(text_file, "--model", text_model, "--context", 16, "--stride", 4, "--threads", 1)
    assert rc == 0 and "Traceback" not in err, f"exit {rc}\nstdout: {out}\nstderr: {err}"
    fields = dict(line.split(None, 1) for line in out.replace("tokens scored", "tokens").splitlines())
    model = minineo.load(text_model)
    ids = model.tokenizer.encode(text_file.read_text())
    expected = score_tokens(model, ids, 16, 4)
    assert float(fields["perplexity"]) == pytest.approx(expected.perplexity, rel=1e-4)
    assert fields["tokens"].startswith(f"{len(ids) - 1} of {len(ids)} ({expected.windows} windows, context 16, stride 4)")
    assert fields["time"].endswith("tokens/s)")
    assert "\r" not in err, f"stderr is not a terminal, yet a progress bar was drawn into it: {err!r}"


def test_cli_int8_and_default_window(text_model, text_file):
    rc, out, err = run_cli(text_file, "-m", text_model, "--int8")
    assert rc == 0, err
    fp32 = minineo.text_perplexity(minineo.load(text_model), text_file.read_text())
    int8 = float(out.split()[1])
    print(f"int8 {int8:.4f} vs float32 {fp32:.4f}")
    assert int8 == pytest.approx(fp32, rel=0.02) and "context 32, stride 8" in out


@pytest.mark.parametrize("case", ["missing file", "empty file", "one token", "stride 0", "stride > context",
                                  "context > max positions", "not a number"])
def test_cli_errors_are_one_line(text_model, text_file, tmp_path, case):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "one.txt").write_text("a")
    args, expected = {
        "missing file": ([tmp_path / "missing.txt"], "missing.txt: no such file or directory"),
        "empty file": ([tmp_path / "empty.txt"], "empty.txt: the file is empty"),
        "one token": ([tmp_path / "one.txt"], "the text is 1 token long"),
        "stride 0": ([text_file, "--stride", 0], "argument --stride: expected an integer >= 1, got '0'"),
        "stride > context": ([text_file, "--context", 8, "--stride", 9], "from 1 to the context (8), got 9"),
        "context > max positions": ([text_file, "--context", 4096], "max_position_embeddings (32), got 4096"),
        "not a number": ([text_file, "--stride", "x"], "argument --stride: expected an integer >= 1, got 'x'"),
    }[case]
    rc, out, err = run_cli(*args, "--model", text_model)
    assert rc != 0 and out == "", (rc, out)
    assert err.startswith("minineo: error: ") and expected in err, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
