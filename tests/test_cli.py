"""`python -m minineo` as a user runs it, in a subprocess: streamed output, seeds, stdin, one-line
errors without tracebacks, --stats, and Ctrl-C."""
import importlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import minineo
from conftest import text_checkpoint
from minineo.commands import common

ROOT = Path(__file__).resolve().parent.parent
# HF_HUB_OFFLINE: a Hub id fails at once instead of after network retries
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
LONG_PROMPT = " Hello" * 1025   # 1025 tokens: with -n 5, 6 more than the test model's context of 1024


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):   # a context of 1024, room for the long run that Ctrl-C stops
    return str(text_checkpoint(tmp_path_factory.mktemp("cli"), max_position_embeddings=1024))


def minineo_cli(*args, stdin=b""):
    done = subprocess.run([sys.executable, "-m", "minineo", *args], input=stdin, capture_output=True,
                          env=ENV, cwd=ROOT, timeout=120)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def assert_ok(rc, out, err):
    assert rc == 0 and "Traceback" not in err, f"exit {rc}\nstdout: {out!r}\nstderr: {err}"


def test_prints_the_prompt_and_its_continuation(checkpoint):
    rc, out, err = minineo_cli("-m", checkpoint, "-n", "12", "--temperature", "0", "Once upon a time")
    assert_ok(rc, out, err)
    assert err == "", err
    # the same as the library's greedy generate
    expected = minineo.generate(minineo.load(checkpoint), "Once upon a time", max_new_tokens=12)
    assert out == "Once upon a time" + expected + "\n", (out, expected)


def test_seed_reproduces_and_stdin_gives_the_prompt(checkpoint):
    first = minineo_cli("-m", checkpoint, "-n", "12", "-s", "7", "Hello")
    assert_ok(*first)
    assert minineo_cli("-m", checkpoint, "-n", "12", "-s", "7", "Hello") == first
    assert minineo_cli("-m", checkpoint, "-n", "12", "-s", "7", stdin=b"Hello\n") == first
    assert minineo_cli("-m", checkpoint, "-n", "12", "-s", "7", "-", stdin=b"Hello") == first
    no_stream = minineo_cli("-m", checkpoint, "-n", "12", "-s", "7", "--no-stream", "--no-display-prompt", "Hello")
    assert_ok(*no_stream)
    assert "Hello" + no_stream[1] == first[1]


@pytest.mark.parametrize("args, stdin, message", [
    (["-m", "{tmp}/no-such-dir", "Hi"], b"", "{tmp}/no-such-dir: no such model directory"),
    (["-m", "minineo-tests/no-such-model", "Hi"], b"", "hf download minineo-tests/no-such-model --include config.json "
                                                       '--include "*.safetensors"'),
    (["--top-p", "1.5", "Hi"], b"", "argument --top-p: expected a number in (0, 1], got '1.5'"),
    (["--top-p", "0", "Hi"], b"", "argument --top-p: expected a number in (0, 1], got '0'"),
    (["--temperature", "-1", "Hi"], b"", "argument --temperature/--temp: expected a finite number >= 0"),
    (["-n", "-5", "Hi"], b"", "argument -n/--max-new-tokens/--n-predict: expected an integer >= 0, or -1"),
    (["-n", "many", "Hi"], b"", "expected an integer >= 0, or -1 (until the context is full), got 'many'"),
    ([], b"caf\xe9 au lait", "stdin: not UTF-8 text (byte 0xe9 at offset 3)"),
    (["-n", "5", LONG_PROMPT], b"", "is 6 tokens longer than the model's context of 1024"),
], ids=["missing directory", "offline Hub id", "top-p > 1", "top-p 0", "negative temperature",
        "negative -n", "-n not a number", "stdin not UTF-8", "prompt too long"])
def test_bad_input_is_one_line_on_stderr(checkpoint, tmp_path, args, stdin, message):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    rc, out, err = minineo_cli(*(["-m", checkpoint] if "-m" not in args else []), *args, stdin=stdin)
    assert rc != 0 and "Traceback" not in err, f"exit {rc}\nstderr: {err}"
    assert len(err.splitlines()) == 1 and err.startswith("minineo: error: "), err
    assert message.replace("{tmp}", str(tmp_path)) in err, err


def test_truncate_keeps_the_end_of_a_long_prompt(checkpoint):
    assert len(minineo.load(checkpoint).tokenizer.encode(LONG_PROMPT)) == 1025
    rc, out, err = minineo_cli("-m", checkpoint, "-n", "5", "--truncate", "--temperature", "0", LONG_PROMPT)
    assert_ok(rc, out, err)
    expected = minineo.generate(minineo.load(checkpoint), " Hello" * 1019, max_new_tokens=5)
    assert out == LONG_PROMPT + expected + "\n"


def test_stats_go_to_stderr(checkpoint):
    rc, out, err = minineo_cli("-m", checkpoint, "-n", "8", "--stats", "-t", "1", "--int8", "Hello")
    assert_ok(rc, out, err)
    lines = err.splitlines()
    for what in ("load:", "prompt: 1 tokens", "generation:", "tokens/s", "peak memory:"):
        assert any(what in line for line in lines), f"no {what!r} in stderr:\n{err}"
    assert "minineo:" not in out


def default_sigint():  # in the child: Ctrl-C raises KeyboardInterrupt even when this test runs in the background
    # A shell starts background jobs with SIGINT ignored, the child inherits that, and Python then
    # never raises KeyboardInterrupt: the generation ran to its end (exit 0, empty stderr), the failure
    # seen in full runs of the suite.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="Windows cannot send SIGINT to one child process")
def test_ctrl_c_stops_cleanly_with_exit_130(checkpoint):
    # -n -1 with --ignore-eos: until the context of 1024 is full, never an early <|endoftext|>; SIGINT is
    # sent once the prompt and the first new token are out, so it always lands during the generation.
    child = subprocess.Popen([sys.executable, "-m", "minineo", "-m", checkpoint, "-n", "-1", "--ignore-eos",
                              "--temp", "0", "Hello"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
                             cwd=ROOT, preexec_fn=default_sigint)
    try:
        first = b""
        while len(first) <= len(b"Hello"):   # the prompt, then at least one byte of the first new token
            chunk = os.read(child.stdout.fileno(), 100)
            assert chunk, f"the child ended before generating: {child.stderr.read().decode()}"
            first += chunk
        child.send_signal(signal.SIGINT)
        rest, err = child.communicate(timeout=60)
    finally:
        child.kill()
    out = (first + rest).decode()
    assert child.returncode == 130, f"exit {child.returncode}\nstderr: {err.decode()}"
    assert "Traceback" not in err.decode() and out.startswith("Hello") and out.endswith("\n"), (out, err)
    model = minineo.load(checkpoint)
    assert len(model.tokenizer.encode(out)) < 1024, "the generation ended before Ctrl-C"


def test_the_prompt_is_flushed_before_generating(checkpoint, monkeypatch):
    """A user sees the prompt at once, before the prompt's forward pass, which takes seconds for 2.7B."""
    from minineo.commands import generate as command
    written = []

    class Stdout:   # a pipe: what was flushed so far is what the user sees
        def __init__(self):
            self.buffer, self.flushed = "", ""

        def write(self, text):
            self.buffer += text

        def flush(self):
            self.flushed = self.buffer

    stdout = Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    real_steps = command.generate_steps

    def steps(*args, **kwargs):   # the generator's first step (the prompt's forward pass) records what was visible
        for i, new in enumerate(real_steps(*args, **kwargs)):
            if i == 0:
                written.append(stdout.flushed)
            yield new

    monkeypatch.setattr(command, "generate_steps", lambda *a, **k: steps(*a, **k))
    assert command.main(["-m", checkpoint, "-n", "3", "--temp", "0", "Hello"]) == 0
    assert written == ["Hello"], written


@pytest.mark.parametrize("command, args", [("generate", ["-n", "2", "Hello"]),
                                           ("perplexity", ["minineo/data/neo-shakespeare-heldout.txt"])])
@pytest.mark.parametrize("flags, threads", [([], None), (["-t", "1"], 1)])
def test_every_command_sets_the_threads(checkpoint, monkeypatch, command, args, flags, threads):
    """Without -t too: BLAS keeping its own threads in the attention products is what set_threads prevents."""
    module = importlib.import_module(f"minineo.commands.{command}")
    calls = []
    monkeypatch.setattr(common, "set_threads", calls.append)
    extra = ["--context", "64"] if command == "perplexity" else []
    assert module.main(["-m", checkpoint, *flags, *extra, *args]) == 0
    assert calls == [threads], f"python -m minineo{'' if command == 'generate' else '.' + command}: {calls}"
