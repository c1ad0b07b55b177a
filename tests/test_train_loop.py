"""Training's optimizer and loop: AdamW and clipping against PyTorch step for step, the schedule,
gradient accumulation, exact resume, Ctrl-C, NaN, and `python -m minineo.train` end to end."""
import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import minineo
from conftest import assert_close, hf_logits, text_checkpoint
from minineo.commands.train import main
from minineo.errors import MinineoError
from minineo.train.grads import hub_named
from minineo.train.loop import STATE, Settings, model_config, new_model, read_checkpoint, step_grads, train
from minineo.commands import train_bench as bench
from minineo.train.optim import AdamW, clip_by_global_norm, learning_rate
from minineo.weights.tokenizer import GPT2_BPE, Tokenizer

ROOT = Path(__file__).resolve().parent.parent
PLAY = ROOT / "minineo" / "data" / "neo-shakespeare-heldout.txt"
TINY_FLAGS = ["--layers", "2", "--hidden-size", "32", "--heads", "2", "--window", "8", "--context", "32",
              "--batch-size", "4", "--threads", "1"]
SETTINGS = Settings(steps=6, batch_size=2, context=16, lr=3e-3, warmup=2, eval_every=3, eval_batches=1,
                    save_every=100, log_every=1)


def tiny_model(seed=0):
    tokenizer = Tokenizer.from_dir(GPT2_BPE)
    return new_model(model_config(tokenizer.vocab_size, 2, 16, 2, 4, 16, tokenizer.eos_token_id), tokenizer, seed)


def tokens(n=2000):
    return np.random.default_rng(0).integers(0, 50257, n)


def test_adamw_equals_torch_step_for_step():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    weights = {"w": rng.standard_normal((5, 3)).astype(np.float32), "b": rng.standard_normal(5).astype(np.float32)}
    theirs = {name: torch.tensor(w, requires_grad=True) for name, w in weights.items()}
    ours = AdamW(weights, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, decayed=["w"])
    reference = torch.optim.AdamW([{"params": [theirs["w"]], "weight_decay": 0.1},
                                   {"params": [theirs["b"]], "weight_decay": 0.0}], betas=(0.9, 0.95), eps=1e-8)
    for step in range(1, 21):
        lr = learning_rate(step, 1e-2, 5, 20)
        grads = {name: rng.standard_normal(w.shape).astype(np.float32) for name, w in weights.items()}
        ours.step(weights, grads, lr)
        for group in reference.param_groups:
            group["lr"] = lr
        for name, p in theirs.items():
            p.grad = torch.tensor(grads[name])
        reference.step()
        for name, w in weights.items():
            worst = np.abs(w - theirs[name].detach().numpy()).max()
            assert worst <= 1e-6, f"step {step}: {name} differs from torch.optim.AdamW by {worst:.3g}"
    print(f"after 20 steps: max abs difference {max(np.abs(w - theirs[n].detach().numpy()).max() for n, w in weights.items()):.3g}")


def test_clipping_equals_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    for max_norm in (0.5, 100.0):   # clipped, and left alone
        grads = {"a": rng.standard_normal((4, 3)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
        params = [torch.zeros(g.shape, requires_grad=True) for g in grads.values()]
        for p, g in zip(params, grads.values()):
            p.grad = torch.tensor(g)
        expected = torch.nn.utils.clip_grad_norm_(params, max_norm).item()
        norm = clip_by_global_norm(grads, max_norm)
        print(f"max_norm {max_norm}: norm {norm:.6f}, torch {expected:.6f}")
        assert abs(norm - expected) <= 1e-5 * expected
        for g, p in zip(grads.values(), params):
            np.testing.assert_allclose(g, p.grad.numpy(), rtol=1e-6, atol=0)


def test_learning_rate_warms_up_then_follows_a_cosine():
    rates = [learning_rate(step, 1.0, 10, 110) for step in range(1, 111)]
    assert rates[:10] == pytest.approx([i / 10 for i in range(1, 11)])   # linear to the peak at step 10
    assert rates[59] == pytest.approx(0.1 + 0.9 * 0.5)                   # half-way down the cosine
    assert rates[-1] == pytest.approx(0.1)                               # the floor, a tenth of the peak
    assert all(a > b for a, b in zip(rates[10:], rates[11:]))


def test_gradient_accumulation_equals_one_bigger_batch():
    model = tiny_model()
    one = step_grads(model, tokens(), np.random.default_rng(3), replace(SETTINGS, batch_size=4))
    two = step_grads(model, tokens(), np.random.default_rng(3), replace(SETTINGS, batch_size=2, accumulate=2))
    print(f"loss {one[0]:.6f} vs {two[0]:.6f}")
    assert abs(one[0] - two[0]) < 1e-5
    for name in one[1]:
        assert_close(two[1][name], one[1][name], name, tol=1e-6 * np.abs(one[1][name]).max())


def interrupt_at(step):  # a log that presses Ctrl-C once `step N` is logged
    def log(line):
        print(line)
        if line.startswith(f"step {step} loss "):
            os.kill(os.getpid(), signal.SIGINT)
    return log


def test_ctrl_c_saves_and_resuming_gives_the_same_weights(tmp_path):
    straight = tiny_model()
    train(straight, tokens(), tokens(200), SETTINGS, tmp_path / "straight")
    stopped = tiny_model()
    with pytest.raises(KeyboardInterrupt):
        train(stopped, tokens(), tokens(200), SETTINGS, tmp_path / "resumed", log=interrupt_at(3))
    model, settings, state = read_checkpoint(tmp_path / "resumed")
    assert state["step"] == 3 and settings == SETTINGS
    train(model, tokens(), tokens(200), settings, tmp_path / "resumed", resume=state)
    for name, w in hub_named(straight.params).items():
        diff = np.abs(hub_named(model.params)[name] - w).max()
        assert np.array_equal(hub_named(model.params)[name], w), f"{name}: resumed run differs by {diff:.3g}"
    model, settings, state = read_checkpoint(tmp_path / "resumed")
    with pytest.raises(MinineoError, match="trained on other text"):
        train(model, tokens(3000), tokens(200), settings, tmp_path / "resumed", resume=state)


def test_nan_stops_naming_the_step_and_weight_and_keeps_the_last_checkpoint(tmp_path):
    model = tiny_model()
    bad = "transformer.h.1.mlp.c_fc.weight"

    def log(line):   # after step 3's update, one weight goes bad
        if line.startswith("step 3 loss"):
            hub_named(model.params)[bad][0, 0] = np.inf
    with pytest.raises(MinineoError) as error:
        train(model, tokens(), tokens(200), replace(SETTINGS, save_every=2, eval_every=100), tmp_path, log=log)
    print(error.value)
    assert str(error.value).startswith(f"step 4: the loss is nan: the weight {bad} holds NaN or inf")
    assert f"last good checkpoint (step 2) is in {tmp_path}" in str(error.value)
    kept, _, state = read_checkpoint(tmp_path)
    assert state["step"] == 2 and all(np.isfinite(w).all() for w in hub_named(kept.params).values())


def run_cli(*args, **kwargs):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, **kwargs)


def test_the_command_trains_a_model_that_transformers_and_minineo_load(tmp_path):
    out = tmp_path / "run"
    result = run_cli("-m", "minineo.train", "--data", str(PLAY), "--out", str(out), "--steps", "30", "--lr", "1e-2",
                     "--eval-every", "10", *TINY_FLAGS)
    print(result.stdout, result.stderr)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == f"step 10 loss {float(lines[0].split()[-1]):.4f}"
    state = json.loads((out / STATE).read_text())
    heldout = [p["heldout"] for p in state["curve"] if "heldout" in p]
    first, last = state["curve"][0]["loss"], heldout[-1]
    print(f"loss at step 1 {first:.3f}, held-out {heldout}")
    assert last < first - 2, "the loss did not fall"
    assert heldout == sorted(heldout, reverse=True)
    transformers = pytest.importorskip("transformers")
    ids = np.random.default_rng(0).integers(0, 50257, (2, 32))
    ours = minineo.load(out)(ids)
    assert_close(ours, hf_logits(transformers.GPTNeoForCausalLM.from_pretrained(out).eval(), ids), "logits")
    generated = run_cli("-m", "minineo", "-m", str(out), "-n", "5", "--temp", "0", "ROMEO.")
    print(generated.stdout, generated.stderr)
    assert generated.returncode == 0 and generated.stdout.startswith("ROMEO.") and len(generated.stdout) > 6


def test_fine_tuning_from_a_model_and_ctrl_c_in_the_command(tmp_path):
    base = text_checkpoint(tmp_path / "base", max_position_embeddings=64)
    out = tmp_path / "tuned"
    args = ["-m", "minineo.train", "--data", str(PLAY), "--out", str(out), "--init-from", str(base),
            "--context", "32", "--batch-size", "2", "--threads", "1", "--log-every", "1"]
    process = subprocess.Popen([sys.executable, *args, "--steps", "1000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    first = process.stdout.readline()
    process.send_signal(signal.SIGINT)
    rest, errors = process.communicate(timeout=120)
    print(first, rest, errors)
    assert first.startswith("step 1 loss ") and process.returncode == 130
    step = json.loads((out / STATE).read_text())["step"]
    assert f"interrupted: step {step} saved in {out}" in rest
    resumed = run_cli(*args, "--resume", "--steps", str(step + 2))
    print(resumed.stdout, resumed.stderr)
    assert resumed.returncode == 0 and resumed.stdout.startswith(f"step {step + 1} loss ")
    assert json.loads((out / STATE).read_text())["step"] == step + 2


@pytest.mark.parametrize("flags, code, message", [
    (["--data", "missing.txt"], 1, "missing.txt: no such file or directory"),
    (["--data", "{empty}"], 1, "the file is empty: nothing to train on"),
    (["--data", "{short}", *TINY_FLAGS], 1, "tokens, shorter than the 64 needed for --context 32"),
    (["--data", "{play}", "--out", "{existing}"], 1, "exists and is not empty; use --force"),
    (["--data", "{play}", "--out", "{short}"], 1, "exists and is not a directory"),
    (["--data", "{play}", "--window", "100"], 2, "--window 100 is larger than --context 64"),
    (["--data", "{play}", "--heads", "5"], 2, "--heads 5 does not divide --hidden-size 64"),
    (["--data", "{play}", "--init-from", "{existing}", "--layers", "3"], 2, "--layers: the model's shape comes from"),
    (["--data", "{play}", "--resume"], 1, "nothing to resume"),
])
def test_bad_input_is_one_line(flags, code, message, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text(" \n")
    (tmp_path / "short.txt").write_text("To be, or not to be.")
    (tmp_path / "existing").mkdir()
    (tmp_path / "existing" / "notes.txt").write_text("mine")
    paths = {"empty": tmp_path / "empty.txt", "short": tmp_path / "short.txt", "play": PLAY,
             "existing": tmp_path / "existing"}
    flags = [f.format(**paths) if f.startswith("{") else f for f in flags]
    if "--out" not in flags:
        flags += ["--out", str(tmp_path / "out")]
    returned = main(flags)
    err = capsys.readouterr().err
    print(err)
    assert returned == code and err.count("\n") == 1 and err.startswith("minineo: error: ") and message in err
    assert (tmp_path / "existing" / "notes.txt").read_text() == "mine"


def test_the_bench_times_a_step_and_says_where_it_goes():
    seconds, memory, parts = bench.minineo_steps((2, 16, 2, 4, 16, 2), threads=1, steps=2)
    print(f"{seconds * 1000:.1f} ms/step, step memory {memory / 2**20:.1f} MiB, parts {parts}")
    assert seconds > 0 and set(parts) >= {"LM head + cross-entropy (both ways)", "blocks forward", "blocks backward",
                                          "AdamW"}
    assert bench.parse_shape("2,16,2,4,16,2") == (2, 16, 2, 4, 16, 2)
    with pytest.raises(MinineoError, match="six integers"):
        bench.parse_shape("2,16")
