"""The training loop: random windows of a token stream, gradient accumulation, clipping, AdamW on a
warm-up + cosine schedule, a held-out loss, checkpoints that resume to the bit, Ctrl-C, and a stop on NaN.

A run's directory is at every checkpoint a model in the Hub layout (config.json, model.safetensors,
tokenizer files) that minineo and transformers load as it is; beside it, optimizer.safetensors and
trainer_state.json hold what a resume needs. Each file is written beside and renamed into place, so
a kill leaves the previous checkpoint whole.
"""
import hashlib
import json
import math
import os
import shutil
import signal
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import MinineoError
from ..fast.memory import keep_freed_memory
from ..model import GPTNeo
from ..weights import load
from ..model.config import Config
from ..weights.config import config_to_dict
from ..weights.safetensors_io import SafetensorsFile, write_safetensors
from .grads import hub_named, loss_and_param_grads, mean_loss
from .optim import AdamW, clip_by_global_norm, learning_rate

STATE, OPTIMIZER, MODEL = "trainer_state.json", "optimizer.safetensors", "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass(frozen=True)
class Settings:
    steps: int = 1000
    batch_size: int = 8
    context: int = 64          # tokens per training window
    lr: float = 1e-3           # the peak learning rate, reached after warm-up
    warmup: int = 100
    weight_decay: float = 0.1  # on matrices only, as GPT-2 and nanoGPT: biases and norms keep their scale
    betas: tuple = (0.9, 0.95)
    clip: float = 1.0          # the largest global gradient norm
    accumulate: int = 1        # micro-batches summed into each step: batch_size x accumulate windows a step
    eval_every: int = 100      # steps between held-out losses
    eval_batches: int = 4
    save_every: int = 100      # steps between checkpoints
    log_every: int = 10
    seed: int = 0


def init_params(config, seed=0):  # -> a new GPT-Neo's weights, nested as minineo.load nests them
    # As transformers initialises GPT-Neo: N(0, 0.02) matrices and embeddings, zero biases, unit norms.
    rng = np.random.default_rng(seed)
    d, inner = config.hidden_size, config.intermediate_size
    normal = lambda *shape: 0.02 * rng.standard_normal(shape, dtype=np.float32)            # noqa: E731
    norm = lambda: {"g": np.ones(d, np.float32), "b": np.zeros(d, np.float32)}              # noqa: E731
    dense = lambda n_out, n_in: {"w": normal(n_out, n_in), "b": np.zeros(n_out, np.float32)}   # noqa: E731
    blocks = [{"ln_1": norm(),
               "attn": {"q_proj": {"w": normal(d, d)}, "k_proj": {"w": normal(d, d)}, "v_proj": {"w": normal(d, d)},
                        "out_proj": dense(d, d)},
               "ln_2": norm(), "mlp": {"c_fc": dense(inner, d), "c_proj": dense(d, inner)}}
              for _ in range(config.num_layers)]
    return {"wte": normal(config.vocab_size, d), "wpe": normal(config.max_position_embeddings, d),
            "blocks": blocks, "ln_f": norm()}


def new_model(config, tokenizer, seed=0):  # a GPT-Neo of random weights, ready to train
    return GPTNeo(config, init_params(config, seed), tokenizer, source="a new model")


def trainable(model):  # a loaded model -> the same model with writable float32 copies of its weights
    if not all(isinstance(w, np.ndarray) for w in hub_named(model.params).values()):
        raise MinineoError(f"{model.source}: load the model with minineo.load(path, fast=False) to train it")
    copy = lambda tree: ({k: copy(v) for k, v in tree.items()} if isinstance(tree, dict)   # noqa: E731
                         else [copy(v) for v in tree] if isinstance(tree, list) else np.array(tree, np.float32))
    return GPTNeo(model.config, copy(model.params), model.tokenizer, model.source)


# ---- data ----

def split_tokens(tokens, context, heldout_fraction=0.1):  # [n] -> train [n1], held-out [n2]
    # The last tenth of the text is held out, and at least one window of it.
    n_heldout = max(context, int(len(tokens) * heldout_fraction))
    return tokens[:-n_heldout], tokens[-n_heldout:]


def sample_batch(tokens, rng, batch_size, context):  # [n] -> [B, T]: windows starting at random places
    starts = rng.integers(0, len(tokens) - context + 1, batch_size)
    return tokens[starts[:, None] + np.arange(context)]


def heldout_batches(tokens, batch_size, context, n_batches):  # -> fixed [B, T] windows spread over the text
    starts = np.linspace(0, len(tokens) - context, batch_size * n_batches).astype(np.int64)
    windows = tokens[starts[:, None] + np.arange(context)]
    return [windows[i:i + batch_size] for i in range(0, len(windows), batch_size)]


def fingerprint(*arrays):  # a short hash of the data, so that a resume on other text is refused
    digest = hashlib.sha256()
    for a in arrays:
        digest.update(np.ascontiguousarray(a, np.int64).tobytes())
    return digest.hexdigest()[:16]


# ---- checkpoints ----

def _replace(path, write):  # write(tmp) then rename over path: the old file stays whole until the new one is
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_model(directory, model, metadata=None):
    """config.json and model.safetensors in the Hub layout: minineo.load and transformers' from_pretrained read it."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    _replace(directory / "config.json", lambda p: p.write_text(json.dumps(config_to_dict(model.config), indent=2)))
    tensors = dict(sorted(hub_named(model.params).items()))
    _replace(directory / MODEL, lambda p: write_safetensors(p, tensors, metadata={"format": "pt", **(metadata or {})}))


def copy_tokenizer(model, directory):
    source = Path(model.tokenizer.directory)
    for name in TOKENIZER_FILES:
        if (source / name).is_file() and source.resolve() != Path(directory).resolve():
            shutil.copy(source / name, directory / name)


def save_checkpoint(directory, model, optimizer, rng, step, settings, curve, data):
    save_model(directory, model, {"step": str(step)})
    arrays, t = optimizer.state()
    _replace(directory / OPTIMIZER, lambda p: write_safetensors(p, arrays, metadata={"step": str(step), "t": str(t)}))
    state = {"step": step, "settings": asdict(settings), "rng": rng.bit_generator.state, "data": data, "curve": curve}
    _replace(directory / STATE, lambda p: p.write_text(json.dumps(state, indent=1)))   # last: it says the step


def read_checkpoint(directory):  # -> model (trainable), settings, state: what train(resume=...) needs
    directory = Path(directory)
    if not (directory / STATE).is_file():
        raise MinineoError(f"{directory}: nothing to resume (no {STATE}; was it written by python -m minineo.train?)")
    state = json.loads((directory / STATE).read_text())
    settings = Settings(**{**state["settings"], "betas": tuple(state["settings"]["betas"])})
    model = trainable(load(directory, fast=False))
    optimizer = SafetensorsFile(directory / OPTIMIZER)
    steps = {MODEL: SafetensorsFile(directory / MODEL).metadata.get("step"), OPTIMIZER: optimizer.metadata.get("step")}
    if any(s != str(state["step"]) for s in steps.values()):
        raise MinineoError(f"{directory}: the checkpoint's files are from different steps ({STATE}: {state['step']}, "
                           f"{', '.join(f'{k}: {v}' for k, v in steps.items())}); it was interrupted while saving")
    state["optimizer"] = ({name: optimizer.float32(name) for name in optimizer.names()}, int(optimizer.metadata["t"]))
    return model, settings, state


# ---- the loop ----

@contextmanager
def finish_step_on_ctrl_c():
    # Ctrl-C inside an update would leave the weights half-changed: the first one is noted and the
    # loop saves after the step it is in; a second one stops at once.
    asked = []

    def note(signum, frame):
        if asked:
            raise KeyboardInterrupt
        asked.append(True)

    if threading.current_thread() is not threading.main_thread():   # signals reach only the main thread
        yield asked
        return
    previous = signal.signal(signal.SIGINT, note)
    try:
        yield asked
    finally:
        signal.signal(signal.SIGINT, previous)


def check_finite(loss, norm, weights, grads, step, directory, saved):
    if math.isfinite(loss) and math.isfinite(norm):
        return
    weight = next((n for n, w in weights.items() if not np.isfinite(w).all()), None)
    grad = next((n for n, g in grads.items() if not np.isfinite(g).all()), None)
    cause = (f"the weight {weight} holds NaN or inf" if weight else
             f"the gradient of {grad} is NaN or inf" if grad else "an activation overflowed float32")
    kept = f"the last good checkpoint (step {saved}) is in {directory}" if saved else "no checkpoint was saved yet"
    raise MinineoError(f"step {step}: the loss is {loss:g}: {cause}; stopped, {kept}")


def step_grads(model, tokens, rng, settings):  # -> mean loss, mean gradients over `accumulate` micro-batches
    total, grads = 0.0, None
    for _ in range(settings.accumulate):
        loss, g = loss_and_param_grads(model.params, model.config,
                                       sample_batch(tokens, rng, settings.batch_size, settings.context))
        g = hub_named(g)
        total += loss
        if grads is None:
            grads = g
        else:
            for name in grads:
                grads[name] += g[name]
    if settings.accumulate > 1:
        for g in grads.values():
            g /= settings.accumulate
    return total / settings.accumulate, grads


def train(model, train_tokens, heldout_tokens, settings, directory, resume=None, log=print, progress=None):
    """Train `model` (its weights change in place) for settings.steps optimizer steps; -> the curve,
    a list of {"step", "loss", "lr"[, "heldout"]}. resume: the state read_checkpoint returned."""
    directory = Path(directory)
    keep_freed_memory()   # every step allocates the same arrays again: keep them in the process
    weights = hub_named(model.params)
    optimizer = AdamW(weights, settings.betas, weight_decay=settings.weight_decay,
                      decayed=[n for n, w in weights.items() if w.ndim == 2])
    rng = np.random.default_rng(settings.seed)
    data = fingerprint(train_tokens, heldout_tokens)
    heldout = heldout_batches(heldout_tokens, settings.batch_size, settings.context, settings.eval_batches)
    step, curve = 0, []
    if resume is not None:
        if resume["data"] != data:
            raise MinineoError(f"{directory}: the run being resumed trained on other text (its data's hash is "
                               f"{resume['data']}, this one's {data})")
        step, curve = resume["step"], resume["curve"]
        optimizer.load_state(*resume["optimizer"])
        rng.bit_generator.state = resume["rng"]
    saved = step if resume is not None else None
    since_log = []
    with finish_step_on_ctrl_c() as ctrl_c:
        while step < settings.steps:
            step += 1
            with np.errstate(over="ignore", invalid="ignore"):   # NaN and inf are caught just below, by name
                loss, grads = step_grads(model, train_tokens, rng, settings)
                norm = clip_by_global_norm(grads, settings.clip)
            check_finite(loss, norm, weights, grads, step, directory, saved)
            lr = learning_rate(step, settings.lr, settings.warmup, settings.steps)
            optimizer.step(weights, grads, lr)
            point = {"step": step, "loss": loss, "lr": lr}
            since_log.append(loss)
            if step % settings.log_every == 0 or step == settings.steps:
                log(f"step {step} loss {np.mean(since_log):.4f}")
                since_log = []
            if step % settings.eval_every == 0 or step == settings.steps:
                point["heldout"] = float(np.mean([mean_loss(model, ids) for ids in heldout]))
                log(f"step {step} held-out loss {point['heldout']:.4f}")
            curve.append(point)
            if progress is not None:
                progress(step, settings.steps)
            if step % settings.save_every == 0 or step == settings.steps or ctrl_c:
                save_checkpoint(directory, model, optimizer, rng, step, settings, curve, data)
                saved = step
            if ctrl_c:   # a second Ctrl-C raises inside the step, and the last checkpoint stays as it was
                log(f"interrupted: step {step} saved in {directory}; --resume continues from it")
                raise KeyboardInterrupt
    return curve


def model_config(vocab_size, layers, hidden_size, heads, window, context, eos_token_id):
    return Config(vocab_size=vocab_size, hidden_size=hidden_size, num_layers=layers, num_heads=heads,
                  intermediate_size=4 * hidden_size, window_size=window,
                  attention_layers=tuple(("global", "local")[i % 2] for i in range(layers)),
                  max_position_embeddings=context, eos_token_id=eos_token_id)
