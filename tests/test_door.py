"""The first hour, as a new user meets it (issue 25): a Hub id offline, a path that does not exist,
defaults, hints for typos, pipes, every laptop OS, odd configs and tokenizers, and quantize's
destinations. Each test runs the command or call a user would and checks the one line they get."""
import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.commands import common
from minineo.commands import generate as generate_command
from minineo.errors import MinineoError
from minineo.weights import hub
from minineo.weights import int8_copy as quantize_module
from minineo.weights.tokenizer import GPT2_BPE
from conftest import assert_close, hf_logits, hf_model, text_checkpoint

ROOT = Path(__file__).resolve().parent.parent
HUB_DEFAULTS = {"HF_HUB_OFFLINE", "HF_ENDPOINT"}   # a caller's shell may set these; the tests need the Hub's defaults
ENV = {key: value for key, value in os.environ.items() if key not in HUB_DEFAULTS} | {"PYTHONPATH": str(ROOT)}
NO_SUCH_REPO = "minineo-tests/no-such-model"   # never in any cache
COMMANDS = ["generate", "perplexity", "quantize", "evaluate", "bench"]   # minineo/commands/*.py with a main


def cli(*args, module="minineo", env=None, timeout=120):   # -> (exit code, stdout, stderr) of a fresh process
    done = subprocess.run([sys.executable, "-m", module, *map(str, args)], capture_output=True, cwd=ROOT,
                          env=ENV | (env or {}), timeout=timeout, stdin=subprocess.DEVNULL)
    return done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")


def assert_one_line(rc, err, expected, code=1):
    assert rc == code and "Traceback" not in err, f"exit {rc}\n{err}"
    assert err.startswith("minineo: error: ") and err.count("\n") == 1, err
    for text in [expected] if isinstance(expected, str) else expected:
        assert text in err, f"{text!r} not in:\n{err}"


# --- 1, 2: the Hub offline, paths -----------------------------------------------------------------

@contextlib.contextmanager
def unreachable_hub(answer=b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"):
    """An HTTP proxy on localhost through which the Hub cannot be reached, on any machine, with or
    without internet: it answers each request with `answer` (None: never answers, as a network that
    drops packets). Yields (environment variables that route huggingface_hub through it, the request
    lines it saw)."""
    server = socket.create_server(("127.0.0.1", 0))
    seen, stop = [], threading.Event()

    def serve():
        while True:
            try:
                connection, _ = server.accept()
            except OSError:   # closed: the test is over
                return
            with connection:
                seen.append(connection.recv(65536).split(b"\r\n")[0].decode())
                if answer is None:
                    stop.wait(30)   # a test that hangs past this fails instead of waiting forever
                else:
                    connection.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        yield {"HTTPS_PROXY": url, "HTTP_PROXY": url, "https_proxy": url, "http_proxy": url, "NO_PROXY": ""}, seen
    finally:
        stop.set()
        server.close()


@pytest.fixture
def offline(monkeypatch):
    """In this process: the Hub unreachable, through a proxy that never answers; yields the requests it saw.
    The caller's HF_HUB_OFFLINE=1 would keep every request from the proxy, and huggingface_hub reads it (and
    HF_ENDPOINT) once, at import: both are set back to the defaults here, in the environment and in its constants."""
    from huggingface_hub import constants
    for key in HUB_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "https://huggingface.co")
    with unreachable_hub(answer=None) as (env, seen):
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        monkeypatch.setattr(hub, "HUB_TIMEOUT_S", 0.5)
        yield seen


def test_an_unreachable_hub_is_asked_once_with_a_timeout(offline):
    """A proxy that never answers: without a timeout this would hang (until the proxy gives up after
    30 s); with huggingface_hub's back-off it would be asked six times."""
    started = time.perf_counter()
    with pytest.raises(MinineoError) as error:
        hub.resolve(NO_SUCH_REPO)
    print(f"failed after {time.perf_counter() - started:.2f} s; the proxy saw {offline}")
    assert [line.split(" HTTP/")[0] for line in offline] == ["CONNECT huggingface.co:443"], offline
    assert "the Hugging Face Hub cannot be reached (timed out)" in str(error.value) and "\n" not in str(error.value)


def hf_download_params(command):
    """The `hf download` command line parsed by the installed `hf` CLI's own parser, without running it."""
    import click
    from huggingface_hub.cli.hf import app
    argv = shlex.split(command)
    assert argv[:2] == ["hf", "download"], argv
    context = click.Context(app, info_name="hf")
    name, download, args = app.resolve_command(context, argv[1:])
    return download.make_context(name, args, parent=context).params


@pytest.mark.parametrize("name, repo, prefix", [
    ("125M", "EleutherAI/gpt-neo-125m", "125M (EleutherAI/gpt-neo-125m): the Hugging Face Hub cannot be reached"),
    (NO_SUCH_REPO, NO_SUCH_REPO, f"{NO_SUCH_REPO}: no such local directory, and the Hugging Face Hub cannot be reached"),
], ids=["release name", "Hub id or missing directory"])
def test_offline_hub_id_is_one_line_with_a_download_command_hf_accepts(tmp_path, name, repo, prefix):
    with unreachable_hub() as (env, seen):
        started = time.perf_counter()
        rc, out, err = cli("-m", name, "Hello", env=env | {"HF_HOME": str(tmp_path / "hf")})
        print(f"python -m minineo -m {name}: exit {rc} after {time.perf_counter() - started:.2f} s, "
              f"{len(seen)} proxy request(s)\n{err}")
    assert_one_line(rc, err, prefix)
    assert "Retry" not in err and "thrown while requesting" not in err
    command = re.search(r"`(hf download [^`]*)`", err).group(1)
    params = hf_download_params(command)
    assert params["repo_id"] == repo and not params["filenames"], params   # no pattern taken for a file name
    assert list(params["include"]) == hub.NEEDED_FILES, params
    assert f"-m {params['local_dir']} " in err, err   # the directory it writes is the one to pass
    torch_flags = re.search(r"without safetensors also needs (.*)\)$", err.strip()).group(1)
    with_torch = hf_download_params(f"{command} {torch_flags}")
    assert list(with_torch["include"]) == hub.NEEDED_FILES + hub.TORCH_FILES and not with_torch["filenames"]


def test_old_download_command_is_what_hf_misreads():
    """The check above can fail: `--include a b c` gives hf one pattern and two file names."""
    params = hf_download_params("hf download EleutherAI/gpt-neo-125m --include config.json '*.safetensors'")
    assert params["include"] == ("config.json",) and params["filenames"] == ("*.safetensors",)


@pytest.mark.parametrize("name", ["models/my-neo", "./my-neo", "~/no-such-minineo-model", "/no/such/model",
                                  "C:\\models\\neo", "C:/models/neo", "minineo/no-such-model"])
def test_a_path_is_never_sent_to_the_hub(offline, tmp_path, monkeypatch, name):
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path)   # models/ exists here, so models/my-neo names a path
    (tmp_path / "minineo").mkdir()
    with pytest.raises(MinineoError, match=f"^{re.escape(name)}: no such model directory$"):
        hub.resolve(name)
    assert offline == [], offline


def test_a_hub_id_offline_says_both_what_is_local_and_what_the_hub_did(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no directory called minineo-tests here
    with pytest.raises(MinineoError, match=rf"^{NO_SUCH_REPO}: no such local directory, and the Hugging Face Hub "
                                           r"cannot be reached \(.*\), and it is not in the local cache"):
        hub.resolve(NO_SUCH_REPO)


def test_a_cached_model_loads_offline(offline, tmp_path, monkeypatch):
    """Offline, a model in huggingface_hub's cache is found there (as `hf download` without --local-dir leaves it)."""
    import huggingface_hub
    cached = text_checkpoint(tmp_path / "snapshot")
    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns, local_files_only: asked.append(local_files_only) or str(cached))
    assert minineo.load(NO_SUCH_REPO).source == str(cached)
    assert asked == [True]


def test_a_bundled_model_by_name_and_a_name_that_is_nothing():
    assert hub.resolve("neo-shakespeare") == hub.BUNDLED
    with pytest.raises(MinineoError, match="no-such-thing: no such model directory, and not a Hub id .owner/name., "
                                           "one of 125M / 1.3B / 2.7B, or a bundled model .neo-shakespeare"):
        hub.resolve("no-such-thing")


# --- 3: defaults never error ----------------------------------------------------------------------

def prompt_of(tokens, model):  # a text of exactly `tokens` tokens
    text = " the" * tokens
    assert len(model.tokenizer.encode(text)) == tokens
    return text


@pytest.fixture(scope="module")
def bundled():
    return minineo.load()


def test_the_default_count_shrinks_to_the_room_the_prompt_leaves(bundled):
    context = bundled.config.max_position_embeddings   # 256
    prompt = prompt_of(200, bundled)
    rc, out, err = cli("--ignore-eos", "--no-display-prompt", "-s", "1", prompt)
    assert rc == 0 and "Traceback" not in err, err
    assert err == f"minineo: generating {context - 200} tokens, the room the prompt's 200 tokens leave in the " \
                  f"model's context of {context} (-n sets the count; the default is 100)\n", err
    args = generate_command.parser().parse_args([prompt])
    assert generate_command.new_tokens(args, 200, context) == 56
    assert generate_command.new_tokens(args, 100, context) == 100   # room enough: the default, silently
    # a count the user chose is theirs, and checked
    rc, out, err = cli("-n", "100", prompt)
    assert_one_line(rc, err, "prompt of 200 tokens + 100 new tokens is 44 tokens longer than the model's context of 256")


def test_minus_one_fills_the_context_and_truncate_keeps_the_prompts_end(bundled):
    parse = generate_command.parser().parse_args
    assert generate_command.new_tokens(parse(["-n", "-1", "x"]), 200, 256) == 56
    assert generate_command.new_tokens(parse(["-n", "-1", "--truncate", "x"]), 300, 256) == 128
    long_prompt = prompt_of(300, bundled)
    rc, out, err = cli("-n", "-1", long_prompt)
    assert_one_line(rc, err, "-n -1 generates until the context is full, but the prompt's 300 tokens already fill "
                             "the model's context of 256; --truncate keeps the prompt's end")
    rc, out, err = cli("-n", "-1", "--truncate", "--ignore-eos", "--temp", "0", "--no-display-prompt", long_prompt)
    assert rc == 0 and err == "", err
    expected = minineo.generate(bundled, prompt_of(128, bundled), max_new_tokens=128, min_new_tokens=128)
    assert out == expected + "\n", (out, expected)
    rc, out, err = cli(long_prompt)
    assert_one_line(rc, err, "the prompt's 300 tokens fill the model's context of 256: shorten it, or --truncate "
                             "keeps its last 156 tokens")


def test_the_python_default_shrinks_too_and_says_so(bundled):
    prompt = prompt_of(230, bundled)
    with pytest.warns(UserWarning, match="generating 26 new tokens, the room a prompt of 230 tokens leaves"):
        ids = minineo.generate_ids(bundled, bundled.tokenizer.encode(prompt), min_new_tokens=26)
    assert len(ids) == 26


# --- 4: hints ---------------------------------------------------------------------------------------

def command_main(name):
    return importlib.import_module(f"minineo.commands.{name}").main


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_suggests_the_flag_it_knows(command, capsys):
    with pytest.raises(SystemExit) as done:
        command_main(command)(["--hepl"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err == "minineo: error: unrecognized argument --hepl: did you mean --help? " \
                                           "(see --help)\n", err


@pytest.mark.parametrize("command, args, typo, meant", [
    ("generate", ["--temprature", "0.5", "Hi"], "--temprature", "--temperature"),
    ("generate", ["--top_k=5", "Hi"], "--top_k", "--top-k"),
    ("perplexity", ["text.txt", "--stirde", "4"], "--stirde", "--stride"),
    ("quantize", ["--froce"], "--froce", "--force"),
])
def test_a_misspelt_flag_gets_did_you_mean(command, args, typo, meant, capsys):
    with pytest.raises(SystemExit) as done:
        command_main(command)(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"unrecognized argument {typo}: did you mean {meant}?" in err, err


def test_an_unquoted_prompt_gets_a_hint_to_quote_it():
    rc, out, err = cli("The", "king", "is", "dead")
    assert_one_line(rc, err, 'unrecognized arguments: king is dead; to pass text with spaces, quote it: '
                             '"The king is dead"', code=2)


@pytest.mark.parametrize("command, args, quoted", [
    ("perplexity", ["my", "play.txt"], '"my play.txt"'),
    ("quantize", ["src", "my", "copy"], '"my copy"'),
])
def test_every_command_hints_at_quoting(command, args, quoted, capsys):
    with pytest.raises(SystemExit) as done:
        command_main(command)(args)
    err = capsys.readouterr().err
    assert done.value.code == 2 and f"to pass text with spaces, quote it: {quoted}" in err, err


# --- 5: pipes -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, args", [
    ("minineo", ["-n", "200", "--ignore-eos", "ROMEO."]),
    ("minineo", ["-n", "5", "--no-stream", "ROMEO."]),
    ("minineo.perplexity", ["{text}"]),
], ids=["streaming", "--no-stream", "perplexity"])
def test_a_reader_that_leaves_early_is_no_error(tmp_path, module, args):
    """`... | head`: the reader closes the pipe, here before anything was written, so every write fails."""
    (tmp_path / "text.txt").write_text("ROMEO.\nBut soft, what light through yonder window breaks?\n")
    args = [arg.replace("{text}", str(tmp_path / "text.txt")) for arg in args]
    child = subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, env=ENV, cwd=ROOT)
    child.stdout.close()
    err = child.stderr.read().decode()
    child.wait(timeout=120)
    assert child.returncode in (0, 141), f"exit {child.returncode}\n{err}"
    assert "Traceback" not in err and "Exception ignored" not in err, err


# --- 10: every OS ---------------------------------------------------------------------------------------

UNIX_ONLY = ["resource", "fcntl", "termios", "pwd", "grp", "tty", "pty", "syslog", "crypt", "curses", "readline"]
HIDE = f"""
import importlib.abc, sys
class WindowsLike(importlib.abc.MetaPathFinder):   # these modules do not exist on Windows
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {UNIX_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden by the test)", name=name)
for name in {UNIX_ONLY!r}:
    sys.modules.pop(name, None)
sys.meta_path.insert(0, WindowsLike())
"""


EXTRAS = ["lm_eval", "ray", "torch", "transformers"]   # what a module may need from an extra (conftest.INSTALLS)


def test_every_module_imports_without_unix_only_modules():
    """No Unix-only module at import time: every module of minineo (every command, the bench included),
    imported in a process where they are missing, as on Windows; and --stats' peak memory says n/a.
    A module that needs an extra which is not installed (text/harness.py: lm-eval) is left out, and
    the test then skips, naming it: `pip install -e ".[test]"` alone does not install lm-eval."""
    code = HIDE + f"""
import importlib, importlib.util, json, pkgutil, minineo
needs = {{}}
for module in pkgutil.walk_packages(minineo.__path__, "minineo."):
    if not module.name.endswith("__main__"):   # __main__ runs the CLI
        try:
            importlib.import_module(module.name)
        except ModuleNotFoundError as e:   # an extra that is not installed (not one the test hid)
            root = (e.name or "").split(".")[0]
            if root not in {EXTRAS!r} or importlib.util.find_spec(root) is not None:
                raise
            needs[module.name] = root
from minineo.commands.common import peak_memory
from minineo.commands.generate import Clock
print(peak_memory(), Clock().report(1, 0.0)[-1])
print(json.dumps(needs))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    result, needs = done.stdout.strip().splitlines()
    assert result == "None peak memory: n/a", done.stdout
    needs = json.loads(needs)
    if needs:   # the reason's words are the ones conftest's summary reads: it names the extra to install
        modules = ", ".join(f"{module} needs {root}" for module, root in needs.items())
        pytest.skip(f"could not import {sorted(set(needs.values()))[0]!r}: {modules}; every other module imported")


def test_the_hiding_works():   # the test above can fail
    done = subprocess.run([sys.executable, "-c", HIDE + "import resource"], capture_output=True, text=True, env=ENV)
    assert done.returncode == 1 and "hidden by the test" in done.stderr, done.stderr


def test_stats_report_peak_memory_where_resource_exists(monkeypatch):
    import resource   # this machine runs POSIX
    peak = common.peak_memory()
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak == (ru if sys.platform == "darwin" else ru * 1024) and peak > 10 * 2**20, peak


# --- 11: CI on three OSes, in step with .ci/run --------------------------------------------------------

def test_the_workflow_runs_ci_run_on_three_oses_and_two_pythons():
    import yaml
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "test.yml").read_text())
    (job,) = workflow["jobs"].values()
    matrix = job["strategy"]["matrix"]
    assert {os_name.split("-")[0] for os_name in matrix["os"]} == {"ubuntu", "macos", "windows"}, matrix
    assert sorted(map(str, matrix["python-version"])) == ["3.10", "3.13"], matrix
    runs = [step["run"] for step in job["steps"] if "run" in step]
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert any(run.strip() == "bash .ci/run" for run in runs), runs   # the same install and test commands
    # the CPU build of torch, installed first, is the one .ci/run pins: pip then keeps it
    pins = re.findall(r"torch==[\d.]+", ci_run)
    assert pins and all(pin in " ".join(runs) for pin in pins), (pins, runs)
    readme = (ROOT / "README.md").read_text()
    test_command = 'pip install -e ".[test]" && python -m pytest'
    assert test_command in readme and test_command in ci_run, "the README's test command is what CI runs"
    # first in a fresh venv that sees nothing installed outside it, before any oracle is installed
    commands = "\n".join(line for line in ci_run.splitlines() if not line.lstrip().startswith("#"))
    first = commands.index(test_command)
    assert commands.index("python -m venv") < first < commands.index("torch==") < commands.rindex(test_command), commands
    assert "--system-site-packages" not in commands and "unset PYTHONPATH" in commands[:first], commands


# --- 12: configs and tokenizers from elsewhere ---------------------------------------------------------

def edit_config(directory, **changes):
    raw = json.loads((directory / "config.json").read_text()) | changes
    (directory / "config.json").write_text(json.dumps(raw))


def test_an_eos_outside_the_vocabulary_loads_and_runs_as_in_transformers(tmp_path):
    model = hf_model(tmp_path, eos_token_id=99999)   # vocab 300: an eos the model can never produce
    ours = minineo.load(tmp_path)
    ids = np.random.default_rng(0).integers(0, 300, (2, 12))
    assert_close(ours(ids), hf_logits(model, ids), "eos_token_id 99999")
    assert len(minineo.generate_ids(ours, [5, 6, 7], max_new_tokens=9, min_new_tokens=3)) == 9   # never stops early


@pytest.mark.parametrize("field, empty_prompt, padding", [
    ("eos_token_id", False, "eos_token_id"),   # no pad_token_id: a batch is padded with eos, as in transformers
    ("bos_token_id", "bos_token_id", False),
    ("pad_token_id", False, "pad_token_id"),
])
def test_special_ids_outside_the_vocabulary_are_refused_only_where_fed(numpy_checkpoint, field, empty_prompt, padding):
    directory = numpy_checkpoint()   # vocab 300
    edit_config(directory, **{field: 300})
    model = minineo.load(directory)
    out = minineo.generate_ids(model, [[5, 6, 7], [8, 9, 10]], max_new_tokens=4, min_new_tokens=4)   # no padding
    assert [len(row) for row in out] == [4, 4]
    for prompts, refused, why in [([], empty_prompt, "an empty prompt starts from it"),
                                  ([[5], [6, 7]], padding, "prompts of different lengths are padded with it")]:
        if refused:
            with pytest.raises(MinineoError, match=rf"^config.json: {refused} 300 is outside the vocabulary "
                                                   rf"\[0, 300\), and {why}$"):
                minineo.generate_ids(model, prompts, max_new_tokens=2)
        else:
            minineo.generate_ids(model, prompts, max_new_tokens=2)


def test_a_pad_id_in_the_vocabulary_pads(numpy_checkpoint):
    directory = numpy_checkpoint()
    edit_config(directory, pad_token_id=7, bos_token_id=3)
    model = minineo.load(directory)
    from minineo.text.generation import prompt_batch
    ids, mask = prompt_batch(model.config, [[1, 2, 4], [], [5]])
    assert ids.tolist() == [[1, 2, 4], [7, 7, 3], [7, 7, 5]] and mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 1]]


def test_a_tokenizer_too_big_for_the_model_names_both_files_and_sizes(numpy_checkpoint):
    directory = numpy_checkpoint()   # vocab_size 300
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(GPT2_BPE / name, directory)
    with pytest.raises(MinineoError, match=rf"^{re.escape(str(directory / 'vocab.json'))} \+ merges.txt has 50257 "
                                           rf"tokens, but {re.escape(str(directory / 'config.json'))} has vocab_size "
                                           "300 .the rows of the model's embedding.: the tokenizer belongs to another model$"):
        minineo.load(directory)
    rc, out, err = cli("-m", directory, "Hi")
    assert_one_line(rc, err, "has 50257 tokens, but")


@pytest.mark.parametrize("layout", ["vocab.json + merges.txt", "tokenizer.json"])
def test_merges_that_name_tokens_the_vocabulary_lacks(text_model_dir, layout):
    vocab = {"a": 0, "b": 1, "<|endoftext|>": 2}
    if layout == "tokenizer.json":
        (text_model_dir / "tokenizer.json").write_text(json.dumps({
            "version": "1.0", "added_tokens": [], "normalizer": None, "pre_tokenizer": None, "post_processor": None,
            "decoder": None, "model": {"type": "BPE", "vocab": vocab, "merges": ["a b"]}}))
        expected = "tokenizer.json: its merges make the token 'ab', which tokenizer.json does not have"
    else:
        (text_model_dir / "vocab.json").write_text(json.dumps(vocab))
        (text_model_dir / "merges.txt").write_text("#version: 0.2\na b\n")
        expected = "merges.txt: its merges make the token 'ab', which vocab.json does not have"
    rc, out, err = cli("-m", text_model_dir, "Hi")
    assert_one_line(rc, err, expected)


@pytest.fixture
def text_model_dir(numpy_checkpoint):
    directory = numpy_checkpoint()
    for name in ("vocab.json", "merges.txt"):
        (directory / name).unlink(missing_ok=True)
    return directory


@pytest.mark.parametrize("call, message", [
    (lambda m: m([[1, 2, 3], [4, 5]]), "ids: row 1 is a list of 2 ids where row 0 is a list of 3 ids"),
    (lambda m: m([[1, 2], 3]), "ids: row 1 is a single id where row 0 is a list of 2 ids"),
    (lambda m: m([[[1, 2], [3]]]), "ids: row 0, item 1 is a list of 1 ids where row 0, item 0 is a list of 2 ids"),
    (lambda m: minineo.score_tokens(m, [[1, 2], [3]]), "ids: row 1 is a list of 1 ids where row 0 is a list of 2 ids"),
    (lambda m: minineo.generate_ids(m, [[1, 2], [3, [4]]]), "prompts[1]: row 1 is a list of 1 ids where row 0 is a single id"),
], ids=["short row", "an id for a row", "deeper", "score_tokens", "generate_ids"])
def test_ragged_ids_name_the_row(numpy_checkpoint, call, message):
    with pytest.raises(MinineoError, match=re.escape(message)):
        call(minineo.load(numpy_checkpoint()))


# --- 7, 13: quantize ------------------------------------------------------------------------------------

def test_quantize_takes_a_bundled_name_and_a_hub_id(tmp_path):
    dst = quantize_module.quantize_checkpoint("neo-shakespeare", tmp_path / "int8")
    ids = np.arange(40)[None] * 7
    assert_close(minineo.load(dst)(ids), minineo.load(int8=True)(ids), "int8 copy of the bundled model", tol=0)
    rc, out, err = cli(NO_SUCH_REPO, tmp_path / "x", module="minineo.quantize", env={"HF_HUB_OFFLINE": "1"})
    assert_one_line(rc, err, [f"{NO_SUCH_REPO}: no such local directory, and the Hugging Face Hub is not asked "
                              "(HF_HUB_OFFLINE is set)", f"hf download {NO_SUCH_REPO}"])


def quantize_cli(*args):
    return cli(*args, module="minineo.quantize")


def test_quantize_to_a_place_it_cannot_write(numpy_checkpoint, tmp_path):
    src = numpy_checkpoint()
    (tmp_path / "a-file").write_text("mine")
    rc, out, err = quantize_cli(src, tmp_path / "a-file" / "int8")
    assert_one_line(rc, err, f"{tmp_path / 'a-file' / 'int8'}: the int8 checkpoint was not written (")
    assert (tmp_path / "a-file").read_text() == "mine"


def test_quantize_to_a_read_only_folder(numpy_checkpoint, tmp_path, monkeypatch):
    """Run as root here, a mode bit would not stop the write: the refusal is the OS's, raised where mkdir would."""
    src = numpy_checkpoint()

    def read_only(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(MinineoError, match=r"the int8 checkpoint was not written \(.*\.int8\.partial-\d+: "
                                           r"Permission denied\)$"):
        quantize_module.quantize_checkpoint(src, tmp_path / "int8")


def test_force_never_deletes_what_the_user_did_not_name(numpy_checkpoint, tmp_path):
    src = numpy_checkpoint()
    (tmp_path / "a-file").write_text("mine")
    rc, out, err = quantize_cli(src, tmp_path / "a-file", "--force")
    assert_one_line(rc, err, f"{tmp_path / 'a-file'}: is a file, and the int8 checkpoint is a directory; nothing was changed")
    assert (tmp_path / "a-file").read_text() == "mine"
    dst = tmp_path / "dst"
    quantize_module.quantize_checkpoint(src, dst)
    (dst / "tokenizer.json").mkdir()   # a directory where the checkpoint writes a file
    (dst / "tokenizer.json" / "notes.txt").write_text("mine")
    before = sorted(str(p.relative_to(dst)) for p in dst.rglob("*"))
    rc, out, err = quantize_cli(src, dst, "--force")
    assert_one_line(rc, err, f"{dst / 'tokenizer.json'}: is a directory where the int8 checkpoint writes a file; "
                             "nothing was changed")
    assert sorted(str(p.relative_to(dst)) for p in dst.rglob("*")) == before
    assert not list(tmp_path.glob(".dst.partial-*"))


def test_a_killed_quantize_leaves_a_folder_that_the_next_run_removes(numpy_checkpoint, tmp_path, capfd):
    src, dst = numpy_checkpoint(), tmp_path / "dst"
    # the first run stops for good halfway through writing the weights, and is killed (SIGKILL / TerminateProcess)
    hang = f"""
import sys, time
from minineo.weights import int8_copy as q
real = q.write_safetensors
def write_then_hang(path, tensors, metadata=None):
    real(path, dict(list(tensors.items())[:3]), metadata)
    print("writing", flush=True)
    time.sleep(600)
q.write_safetensors = write_then_hang
q.quantize_checkpoint({str(src)!r}, {str(dst)!r})
"""
    child = subprocess.Popen([sys.executable, "-c", hang], stdout=subprocess.PIPE, env=ENV, cwd=ROOT)
    assert child.stdout.readline() == b"writing\n"
    child.kill()
    child.wait()
    (left,) = tmp_path.glob(".dst.partial-*")
    assert left.name == f".dst.partial-{child.pid}" and (left / "model.safetensors").exists()
    alive = tmp_path / f".dst.partial-{os.getppid()}"   # another run's, still going: kept
    alive.mkdir()
    capfd.readouterr()
    quantize_module.quantize_checkpoint(src, dst)
    err = capfd.readouterr().err
    assert not left.exists() and alive.exists() and (dst / "model.safetensors").exists()
    assert err == f"minineo: removed {left}, left by a quantize that was killed (process {child.pid} is gone)\n", err


def test_process_alive():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert quantize_module.process_alive(os.getpid()) and quantize_module.process_alive(os.getppid())
    assert not quantize_module.process_alive(child.pid)


def test_ctrl_c_while_moving_files_in_waits_without_a_signal_mask(numpy_checkpoint, tmp_path, monkeypatch):
    """Windows has no signal.pthread_sigmask: the move defers Ctrl-C with a handler instead."""
    src, dst = numpy_checkpoint(), tmp_path / "dst"
    quantize_module.quantize_checkpoint(src, dst)
    monkeypatch.delattr(signal, "pthread_sigmask", raising=False)
    real_replace, moved = os.replace, []

    def replace_and_ctrl_c(a, b):   # Ctrl-C arrives as the first file moves in
        if not moved:
            signal.raise_signal(signal.SIGINT)
        moved.append(Path(b).name)
        real_replace(a, b)

    monkeypatch.setattr(quantize_module.os, "replace", replace_and_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        quantize_module.quantize_checkpoint(src, dst, force=True)
    assert sorted(moved) == sorted(p.name for p in dst.iterdir()), "Ctrl-C stopped the move halfway"
    minineo.load(dst)


# --- 9: the test run itself -------------------------------------------------------------------------

def test_a_run_without_an_oracle_says_which_and_how_to_install_it(tmp_path):
    (tmp_path / "torch.py").write_text("raise ModuleNotFoundError(\"No module named 'torch'\", name='torch')\n")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_golden.py",
                           "tests/test_against_transformers.py"], capture_output=True, text=True, cwd=ROOT,
                          env=ENV | {"PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}, timeout=300)
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0, done.stdout[-3000:]
    assert lines[-2] == '1 test skipped because torch is not installed (the oracles minineo is compared with): ' \
                        'pip install -e ".[compare]"', lines[-3:]


def test_skip_summary():
    from conftest import skip_summary
    reasons = ["could not import 'torch': No module named 'torch'", "could not import 'lm_eval.models.huggingface': x",
               "could not import 'torch': No module named 'torch'", "could not import 'zstandard': y", "Windows only"]
    assert skip_summary(reasons) == ('4 tests skipped because lm_eval, torch, zstandard are not installed (the oracles '
                                     'minineo is compared with): pip install -e ".[compare]" && pip install zstandard')
    assert skip_summary(["Windows only"]) is None


def test_parametrize_takes_lists_as_pytest_10_requires():
    """pytest 10 refuses a generator in parametrize (PytestRemovedIn10Warning, an error here: pyproject's
    filterwarnings); test_golden gave it enumerate(...)."""
    import test_golden
    (mark,) = test_golden.test_logits_match_stored_transformers_logits.pytestmark
    assert isinstance(mark.args[1], (list, tuple)), type(mark.args[1])


# --- 8: the license ---------------------------------------------------------------------------------

def test_the_license_file_is_the_one_pyproject_declares():
    declared = re.search(r'^license = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    license_text = (ROOT / "LICENSE").read_text()
    assert declared == "MIT" and license_text.startswith("MIT License\n") and "Permission is hereby granted" in license_text
    card = (ROOT / "minineo" / "data" / "neo-shakespeare" / "MODEL_CARD.md").read_text()
    assert "- **License**: MIT" in card
