"""A student's function inside the bundled model, in place of the reference: what their bug does to
the held-out loss and to the text the model writes.

The model is minineo's bundled Shakespeare model with plain NumPy weights (the textbook path), and
the loss is measured on the play it never saw in training (The Tempest). Every module of minineo
that calls the reference gets the student's function instead, for the duration of the measurement.
"""
import contextlib
import functools
import importlib
import warnings
from pathlib import Path
from unittest import mock

import numpy as np

from ..text.sampling import next_token
from .checker import their_line
from .isolated import run_isolated

MODULES = ["minineo.model.attention", "minineo.model.block", "minineo.model.embedding", "minineo.model.layer_norm",
           "minineo.model.mlp", "minineo.model.gpt_neo", "minineo.model.cache", "minineo.text.sampling"]
HELDOUT = Path(__file__).resolve().parent.parent / "data" / "neo-shakespeare-heldout.txt"
TOKENS = 256        # held-out tokens scored: the bundled model's whole context, a second or two on a laptop
PIECE = 32          # fed this many at a time, so that the KV cache and queries after cached keys are used too
PROMPT = "PROSPERO.\n"
NEW_TOKENS = 12
SAMPLING = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9)   # for the sampling exercises
_model = None


def bundled_model():
    global _model
    if _model is None:
        from ..fast.threads import set_threads
        from ..weights import load
        # as the commands do: unset, BLAS runs its own threads in the small products and stalls on a busy machine
        set_threads()
        _model = load(None, fast=False)
    return _model


_reference = {}   # sampling or not -> the reference's (loss, text), measured once per process


@contextlib.contextmanager
def replaced(reference, theirs):  # every module-level name bound to `reference` in minineo now means `theirs`
    with contextlib.ExitStack() as stack:
        for name in MODULES:
            module = importlib.import_module(name)
            for attribute, value in list(vars(module).items()):
                if value is reference:
                    stack.enter_context(mock.patch.object(module, attribute, theirs))
        yield


def heldout_loss(model, ids):  # nats per token of ids[1:], the tokens fed PIECE at a time through the KV cache
    cache = model.new_cache(1)
    nll = 0.0
    for start in range(0, len(ids) - 1, PIECE):
        chunk = ids[start:min(start + PIECE, len(ids) - 1)]
        logits = model(chunk[None], cache=cache)[0].astype(np.float64)       # [t, V]
        targets = ids[start + 1:start + 1 + len(chunk)]
        top = logits.max(axis=-1)
        nll += float((np.log(np.exp(logits - top[:, None]).sum(axis=-1)) + top - logits[np.arange(len(chunk)), targets]).sum())
    return nll / (len(ids) - 1)


def continuation(model, sampling):  # NEW_TOKENS after PROMPT: greedy, or sampled with a fixed seed
    ids = np.array([model.tokenizer.encode(PROMPT)])
    cache = model.new_cache(1)
    rng = np.random.default_rng(0)
    logits = model(ids, cache=cache)[:, -1]
    new = []
    for _ in range(NEW_TOKENS):
        if not np.isfinite(logits).all():
            return None
        token = next_token(logits, ids, rng, **(SAMPLING if sampling else {}))
        new.append(int(token[0]))
        ids = np.concatenate([ids, token[:, None]], axis=1)
        logits = model(token[:, None], cache=cache)[:, -1]
    return model.tokenizer.decode(new)


def measure(model, sampling):
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        ids = np.array(model.tokenizer.encode(HELDOUT.read_text(encoding="utf-8"))[:TOKENS + 1])
        return heldout_loss(model, ids), continuation(model, sampling)


LIMIT = 300   # seconds the measurement with the student's function may take (a second or two when right)


def in_model(exercise, fn, filename=None, diagnosis=None):  # -> lines to print; diagnosis: the unit check's, if any
    model = bundled_model()
    sampling = exercise.reference.__module__ == "minineo.text.sampling"

    def theirs():
        with replaced(exercise.reference, fn):
            return measure(model, sampling)
    # in a child process, as the unit check: a stub, a crash or an exit is reported without measuring the reference
    outcome = next(run_isolated([theirs], functools.partial(their_line, filename=filename), limit=LIMIT))
    if outcome.kind == "not written":
        return [f"{exercise.name} in the model: not written yet (it raises NotImplementedError)"]
    if not outcome.ok:
        return [f"{exercise.name} in the model: " + (f"it raised {outcome.error}" if outcome.error else
                                                      f"your function {outcome.ended}"),
                *([f"  at {outcome.where}"] if outcome.where else [])]
    loss, text = outcome.value
    if sampling not in _reference:
        _reference[sampling] = measure(model, sampling)
    reference_loss, reference_text = _reference[sampling]
    what = f"{NEW_TOKENS} tokens sampled (seed 0, {', '.join(f'{k} {v}' for k, v in SAMPLING.items() if k != 'do_sample')})" \
        if sampling else f"{NEW_TOKENS} greedy tokens"
    lines = [f"{exercise.name} in the bundled model ({Path(model.source).name}), in place of {exercise.where}:",
             f"  held-out loss: the first {TOKENS} tokens of The Tempest (a play it never saw), fed {PIECE} at a time "
             f"through the KV cache, in nats per token",
             f"  {what} after {PROMPT!r}", "",
             f"  {'':10} {'loss':>9}   continuation",
             f"  {'reference':10} {reference_loss:9.4f}   {reference_text!r}"]
    if not np.isfinite(loss):
        return lines + [f"  {'yours':10} {loss:9}   the model computed NaN or inf with your function: a NaN in one place "
                        "(a fully masked row, an overflowing exp) spreads to every later token and layer"]
    lines.append(f"  {'yours':10} {loss:9.4f}   {text!r}" if text is not None else
                 f"  {'yours':10} {loss:9.4f}   (no text: the logits became NaN or inf while generating)")
    change = loss - reference_loss
    change = 0.0 if abs(change) < 1e-4 else change   # float32 rounding is no change: never print -0.0000
    lines += ["", f"  your function changes the held-out loss by {change:+.4f} nats per token" +
              (" (the same loss" + (", the sampling does not enter it)" if sampling else ")") if abs(change) < 1e-4 else "")]
    lines += ["  " + line for line in meaning(exercise, change, sampling, text == reference_text, diagnosis)]
    return lines


def meaning(exercise, change, sampling, same_text, diagnosis):  # what the difference says, in words
    if sampling:
        said = ["the same sampled text" if same_text else "different sampled text"]
        if not same_text:
            said.append(f"a different text is a different sampler: your {exercise.name} does not choose as GPT-Neo's "
                        "generation does (the same seed, the same logits)")
        return said
    if abs(change) < 1e-4:
        return ["the same loss and text: inside the model, your function computes what GPT-Neo's does" if same_text else
                "the same loss but a different text: a difference too small for the loss flips a close choice "
                "between two tokens; look for a small slip"]
    said = [f"a different loss, lower or higher, is a different model: the weights were trained with GPT-Neo's "
            f"{exercise.name}, so the loss to reach is the reference's, not a lower one"]
    if change < 0:
        said.append(f"yours is lower here, by {-change:.4f}: a changed model that happens to score better on these "
                    f"{TOKENS} tokens, not a better model" +
                    (f"; the unit check named the mistake that does it: your {exercise.name} {diagnosis.split('your ' + exercise.name + ' ', 1)[-1].split(' (it computes')[0]}"
                     if diagnosis else ""))
    return said
