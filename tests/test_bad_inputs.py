"""Inputs from the wild, through the API and the command lines: each mistake is one clear line, never
a traceback or a silent wrong answer, and an interrupted command loses nothing. (Bad files: test_bad_files.py.)"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.commands import quantize as quantize_command
from minineo.errors import MinineoError
from minineo.text.sliding_window import score_tokens
from minineo.weights import int8_copy as quantize_module
from conftest import rewrite_tensors

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from conftest import text_checkpoint
    return minineo.load(text_checkpoint(tmp_path_factory.mktemp("bad-inputs")))


def cli(*args, stdin=b"", module="minineo", **kwargs):   # -> (exit code, stdout, stderr) of a fresh process
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], input=stdin, capture_output=True,
                          env={**ENV, **kwargs.pop("env", {})}, cwd=ROOT, timeout=120, **kwargs)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def assert_one_line_error(rc, err, expected, code=1):   # 1: a failure, 2: a usage mistake
    assert rc == code and "Traceback" not in err, f"exit {rc}\n{err}"
    assert err.startswith("minineo: error: ") and err.count("\n") == 1, err
    assert expected in err, err


def nan_at(w, row, column, value=np.nan):  # a copy of w with one value broken
    w = w.copy()
    w[row, column] = value
    return w


# --- the API -------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, message", [
    (lambda m: m(np.array([1.7, 2.2])), "token ids must be integers, got float64"),
    (lambda m: m(np.array([[1, 2, 3]]), attention_mask=np.ones((1, 2))), "attention_mask: expected 0/1 values of shape [1, 3]"),
    (lambda m: minineo.generate_ids(m, [1.0, 2.0]), "prompts: token ids must be integers"),
    (lambda m: minineo.generate_ids(m, [5, -3]), "prompts: token ids must be in [0, 50257), got -3..5"),
    (lambda m: score_tokens(m, [10, 20, -1]), "ids: token ids must be in [0, 50257), got -1..20"),
    (lambda m: score_tokens(m, np.array([10.0, 20.0, 30.0])), "ids: token ids must be integers"),
    (lambda m: minineo.generate(m, "caf\udce9"), "text is not valid Unicode: a lone surrogate"),
    (lambda m: minineo.generate(m, b"bytes"), "prompt must be a str or a list of str, got bytes"),
    (lambda m: minineo.text_perplexity(m, b"bytes"), "text must be a str, got bytes"),
], ids=["float ids", "mask of another width", "float prompt ids", "negative prompt id", "negative target id",
        "float target ids", "lone surrogate", "bytes prompt", "bytes text"])
def test_api_refuses_what_it_would_otherwise_get_wrong(model, call, message):
    with pytest.raises(MinineoError) as error:
        call(model)
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_generate_steps_refuses_a_mask_of_another_width(model):
    from minineo.text.generation import generate_steps
    with pytest.raises(MinineoError, match=r"attention_mask: expected shape \[1, 3\] \(that of ids\), got \[1, 2\]"):
        generate_steps(model, np.array([[1, 2, 3]]), np.array([[1, 1]]))


def test_non_finite_weights_are_named_not_turned_into_junk(model, tmp_path):
    broken = shutil.copytree(model.source, tmp_path / "broken")
    rewrite_tensors(broken, lambda t: t | {"transformer.h.1.mlp.c_fc.weight": nan_at(t["transformer.h.1.mlp.c_fc.weight"], 3, 5)})
    bad = minineo.load(broken)
    for call in (lambda: minineo.generate(bad, "Hello"), lambda: minineo.text_perplexity(bad, "Hello there, my friend")):
        with pytest.raises(MinineoError, match=r"computed NaN or inf values \(its weight blocks.1.mlp.c_fc.w holds NaN"):
            call()
    rc, out, err = cli("-m", broken, "-n", "3", "Hello")
    assert_one_line_error(rc, err, "blocks.1.mlp.c_fc.w holds NaN or inf")


def test_greedy_with_sampling_settings_warns_as_transformers_does(model):
    with pytest.warns(UserWarning, match="do_sample is False"):
        minineo.generate(model, "Hi", max_new_tokens=2, temperature=0.7)


def test_the_model_cards_pipeline_call_runs_on_the_bundled_model():
    # 256 new tokens (the pipeline's default) would fill the bundled model's whole context of 256
    generator = minineo.pipeline("text-generation")
    (out,) = generator("EleutherAI has", do_sample=True, min_length=50, seed=0)
    n = len(generator.model.tokenizer.encode(out["generated_text"]))
    assert out["generated_text"].startswith("EleutherAI has") and n >= 50, out
    with pytest.raises(MinineoError, match="300 new tokens leave no room"):   # a setting the user chose is theirs
        generator("EleutherAI has", max_new_tokens=300)


# --- the command line ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def checkpoint(model):
    return model.source


def test_llama_cpp_flags(checkpoint, tmp_path):
    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("Once upon a time")
    base = ["-m", checkpoint, "-n", "6", "--temp", "0"]
    reference = cli(*base, "Once upon a time")
    assert reference[0] == 0, reference[2]
    assert cli(*base, "-p", "Once upon a time")[:2] == reference[:2]
    assert cli(*base, "-f", prompt_file)[:2] == reference[:2]
    rc, out, err = cli("--version")
    assert rc == 0 and out.startswith("minineo "), (out, err)
    # -s -1 is a random seed, -n -1 fills the context (256 tokens here), --ignore-eos never stops early
    rc, out, err = cli("-m", checkpoint, "-s", "-1", "-n", "-1", "--ignore-eos", "--no-display-prompt", "Hi")
    assert rc == 0, err
    model = minineo.load(checkpoint)
    assert len(model.tokenizer.encode(out.rstrip("\n"))) >= 200, len(out)
    assert_one_line_error(*cli(*base, "-p", "a", "b")[::2], "give the prompt one way, not PROMPT and -p", code=2)


def test_two_unseeded_runs_differ(checkpoint):
    # A random seed each run: over 40 tokens of a 50257-way choice, equal texts mean the seed was fixed.
    runs = {cli("-m", checkpoint, "-n", "40", "--top-k", "0", "Hi")[1] for _ in range(2)}
    assert len(runs) == 2, runs


@pytest.mark.parametrize("case", ["non-UTF-8 argument", "closed stdin", "endless stdin", "missing -f file",
                                  "directory as -f"])
def test_cli_input_mistakes_are_one_line(checkpoint, tmp_path, case):
    base = [sys.executable, "-m", "minineo", "-m", checkpoint, "-n", "2"]
    if case == "non-UTF-8 argument":
        done = subprocess.run([*map(os.fsencode, base), b"caf\xe9"], capture_output=True, env=ENV, cwd=ROOT, timeout=120)
        expected = "text is not valid Unicode"
    elif case == "closed stdin":
        done = subprocess.run([*base, "-"], stdin=subprocess.DEVNULL, capture_output=True, env=ENV, cwd=ROOT,
                              timeout=120, preexec_fn=lambda: os.close(0))
        expected = "stdin is closed"
    elif case == "endless stdin":
        with open("/dev/zero", "rb") as zero:
            done = subprocess.run([*base, "-"], stdin=zero, capture_output=True, env=ENV, cwd=ROOT, timeout=120)
        expected = "stdin: stopped reading after 1048576 bytes"
    else:
        path = tmp_path / "missing.txt" if case == "missing -f file" else tmp_path
        done = subprocess.run([*base, "-f", str(path)], capture_output=True, env=ENV, cwd=ROOT, timeout=120)
        expected = f"{path}: " + ("no such file or directory" if case == "missing -f file" else "is a directory")
    assert_one_line_error(done.returncode, done.stderr.decode(), expected)


def test_ascii_only_stdout_gets_replacement_characters_not_a_crash(checkpoint):
    rc, out, err = cli("-m", checkpoint, "-n", "3", "--temp", "0", "café ☕", env={"PYTHONIOENCODING": "ascii"})
    assert rc == 0 and "Traceback" not in err, err
    assert out.startswith("caf? ?"), out


def test_perplexity_refuses_an_endless_file(checkpoint):
    rc, out, err = cli("/dev/zero", "--model", checkpoint, module="minineo.perplexity")
    assert_one_line_error(rc, err, "/dev/zero: stopped reading after 256 MiB")


# --- quantize: nothing outside the model directory, nothing lost ----------------------------------

def test_quantize_never_reads_outside_the_model_directory(numpy_checkpoint, tmp_path):
    src = numpy_checkpoint()
    (src / "model.safetensors").rename(src / "model-00001-of-00001.safetensors")
    for shard in ("../outside/model.safetensors", "/etc/passwd", "sub/model.safetensors"):
        (src / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"transformer.wte.weight": shard}}))
        with pytest.raises(MinineoError, match="is not a plain file name"):
            quantize_module.quantize_checkpoint(src, tmp_path / "dst")
        with pytest.raises(MinineoError, match="is not a plain file name"):
            minineo.load(src)
    assert not (tmp_path / "dst").exists()


def test_quantize_refuses_non_finite_weights(numpy_checkpoint, tmp_path):
    src = numpy_checkpoint()
    name = "transformer.h.0.attn.attention.k_proj.weight"
    rewrite_tensors(src, lambda t: t | {name: nan_at(t[name], 0, 0, np.inf)})
    with pytest.raises(MinineoError, match="tensor transformer.h.0.attn.attention.k_proj.weight holds non-finite"):
        quantize_module.quantize_checkpoint(src, tmp_path / "dst")
    assert not (tmp_path / "dst").exists() and not list(tmp_path.glob(".dst.*"))


def test_an_interrupted_quantize_keeps_the_old_destination(numpy_checkpoint, tmp_path, monkeypatch, capsys):
    src, dst = numpy_checkpoint(), tmp_path / "dst"
    quantize_module.quantize_checkpoint(src, dst)
    before = {p.name: p.read_bytes() for p in dst.iterdir()}
    real_write = quantize_module.write_safetensors

    def write_then_ctrl_c(path, tensors, metadata=None):   # Ctrl-C halfway through the new weights
        real_write(path, dict(list(tensors.items())[:5]), metadata)
        raise KeyboardInterrupt

    monkeypatch.setattr(quantize_module, "write_safetensors", write_then_ctrl_c)
    assert quantize_command.main([str(src), str(dst), "--force"]) == 130
    assert "Traceback" not in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in dst.iterdir()} == before, "the old int8 checkpoint changed"
    assert not list(tmp_path.glob(".dst.*")), "the half-written copy was left behind"
    minineo.load(dst)


@pytest.mark.parametrize("stream", [True, False], ids=["streaming", "--no-stream"])
def test_ctrl_c_prints_what_was_generated(checkpoint, monkeypatch, capsys, stream):
    from minineo.commands import generate as command
    real = command.detokenize

    def three_pieces_then_ctrl_c(*args):   # Ctrl-C arrives after the third piece of text
        for i, piece in enumerate(real(*args)):
            if i == 3:
                raise KeyboardInterrupt
            yield piece

    full = command.main(["-m", checkpoint, "-n", "8", "--temp", "0", "--no-display-prompt", "Hello"])
    expected = "".join(list(real(*_pieces_args(checkpoint)))[:3])
    capsys.readouterr()
    monkeypatch.setattr(command, "detokenize", three_pieces_then_ctrl_c)
    flags = [] if stream else ["--no-stream"]
    assert full == 0
    assert command.main(["-m", checkpoint, "-n", "8", "--temp", "0", "--no-display-prompt", *flags, "Hello"]) == 130
    out, err = capsys.readouterr()
    assert out == expected + "\n" and "Traceback" not in err, (out, expected, err)


def _pieces_args(checkpoint):   # what the command hands detokenize for 8 greedy tokens after "Hello"
    from minineo.text.generation import batch_prompts, generate_steps
    model = minineo.load(checkpoint)
    ids, mask = batch_prompts([model.tokenizer.encode("Hello")], model.config.eos_token_id)
    steps = generate_steps(model, ids, mask, max_new_tokens=8)
    return (new[0] for new in steps), model.tokenizer, model.config.eos_token_id
