"""Text generation: the prompt through the model once, then one token at a time with the KV cache.

Dimensions: B = batch (prompts), T = prompt length after left padding, d = hidden size, V = vocabulary.

Four layers, each built on the one before:
    generate_steps(model, ids, attention_mask, ...)  yields the next token of every row, [B], per step
    generate_ids(model, prompts, ...)                token ids in, new token ids out
    stream_text(model, prompt, ...)                  text pieces of one prompt as soon as they decode
    generate(model, prompt(s), ...)                  the new text
Every setting means what it means in transformers' `generate` (minineo/text/settings.py); hooks=[(name, fn)]
keeps minineo's hook points on at every step (minineo/model/hooks.py).
"""
import warnings

import numpy as np

from . import sampling
from ..errors import MinineoError
from ..model.checks import check_token_ids
from .settings import DEFAULT_MAX_NEW_TOKENS, Settings
from .stream import StreamDetokenizer


def plan_lengths(T, settings, context):
    # prompt length T -> (prompt tokens kept, max new tokens, new tokens before EOS is allowed)
    max_new = settings.max_new_tokens
    if max_new is None and settings.max_length is not None:
        max_new = settings.max_length - T
        if max_new < 0:
            raise MinineoError(f"max_length {settings.max_length} is shorter than the prompt's {T} tokens; "
                               f"max_new_tokens counts only new tokens")
    elif max_new is None:   # a default must not be why a call fails: it shrinks to the room the prompt leaves
        max_new = DEFAULT_MAX_NEW_TOKENS
        if 0 < context - T < max_new and not settings.truncate:
            warnings.warn(f"generating {context - T} new tokens, the room a prompt of {T} tokens leaves in the "
                          f"model's context of {context} (max_new_tokens sets the count; the default is {max_new})",
                          stacklevel=4)
            max_new = context - T
    if max_new >= context:
        raise MinineoError(f"{max_new} new tokens leave no room for a prompt: "
                           f"the model's context is {context} tokens")
    over = T + max_new - context
    if over > 0 and not settings.truncate:
        raise MinineoError(f"prompt of {T} tokens + {max_new} new tokens is {over} tokens longer than the "
                           f"model's context of {context}; shorten the prompt, ask for fewer new tokens, or "
                           f"truncate (truncate=True, --truncate) to keep the prompt's last {context - max_new} tokens")
    kept = min(T, context - max_new)
    min_length = 0 if settings.min_length is None else settings.min_length
    return kept, max_new, max(settings.min_new_tokens, min_length - kept)


def batch_prompts(sequences, start_token_id, pad_token_id=None):  # B lists of ids -> ids [B, T], attention_mask [B, T]
    # An empty prompt starts from start_token_id, as transformers starts from bos (GPT-Neo's bos is its
    # eos). Shorter prompts are padded on the left, so that every row's newest token is in the last
    # column and new tokens line up; the pad id is masked, never attended to (default: the start id).
    pad = start_token_id if pad_token_id is None else pad_token_id
    sequences = [list(s) or [start_token_id] for s in sequences]
    T = max(map(len, sequences))
    ids = np.full((len(sequences), T), pad, np.int64)
    mask = np.zeros((len(sequences), T), np.int64)
    for row, s in enumerate(sequences):
        ids[row, T - len(s):], mask[row, T - len(s):] = s, 1
    return ids, mask


def prompt_batch(config, sequences):  # B lists of ids -> batch_prompts with config's bos and pad ids
    """transformers loads a config whose special ids lie outside the vocabulary; such an id is refused
    only where it would be fed to the model (and embedded): bos for an empty prompt, the pad id for a
    batch of prompts of different lengths."""
    sequences = [list(s) for s in sequences]
    if not all(sequences):
        start_field = "eos_token_id" if config.bos_token_id is None else "bos_token_id"
        check_fed(config, start_field, config.start_token_id, "an empty prompt starts from it")
    pad_field, pad = config.padding_token
    if len({len(s) or 1 for s in sequences}) > 1:
        check_fed(config, pad_field, pad, "prompts of different lengths are padded with it")
    return batch_prompts(sequences, config.start_token_id, pad)


def check_fed(config, field, value, why):  # a special id the model is about to embed must be in the vocabulary
    if not 0 <= value < config.vocab_size:
        raise MinineoError(f"config.json: {field} {value} is outside the vocabulary [0, {config.vocab_size}), "
                           f"and {why}")


def generate_steps(model, ids, attention_mask=None, **settings):
    """ids [B, T] (left-padded; attention_mask 1 = real token) -> an iterator of [B] token arrays,
    one per step, until every row has produced EOS or max_new_tokens steps. A row that is finished
    gets EOS as padding from then on, as in transformers. Checks happen now, not at the first step."""
    settings = Settings(**settings)
    ids = check_token_ids(ids, model.config.vocab_size)
    if ids.ndim != 2:
        raise MinineoError(f"ids: expected a left-padded batch [B, T], got shape {list(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else np.asarray(attention_mask)
    if mask.shape != ids.shape:   # refused, not cut to fit: a mask of another width belongs to other ids
        raise MinineoError(f"attention_mask: expected shape {list(ids.shape)} (that of ids), got {list(mask.shape)}")
    kept, max_new, min_new = plan_lengths(ids.shape[1], settings, model.config.max_position_embeddings)
    # truncation drops columns from the left: pads first, then the oldest tokens
    return decode(model, ids[:, -kept:], mask[:, -kept:], max_new, min_new, settings)


def decode(model, ids, mask, max_new, min_new, settings):  # the prompt once, then a token a step: yields [B] each step
    if max_new == 0:
        return
    B, T = ids.shape
    eos = model.config.eos_token_id
    # an eos outside the vocabulary is never generated: nothing to hold off (nor an index to set)
    suppressed_eos = eos if eos < model.config.vocab_size else None
    rng = np.random.default_rng(settings.seed) if settings.do_sample else None
    # the sequences so far, prompt and new tokens, for the repetition penalty; padding does not count
    tokens = np.concatenate([ids, np.zeros((B, max_new), np.int64)], axis=1)   # [B, T + max_new]
    real = np.concatenate([mask == 1, np.ones((B, max_new), bool)], axis=1)
    finished = np.zeros(B, bool)
    cache = model.new_cache(B)
    h = model.forward(ids, mask, cache, hooks=settings.hooks)[:, -1]   # [B, T] -> [B, d]: only the last position is scored
    for n in range(max_new):
        logits = model.check_finite(model.logits(h))   # [B, d] -> [B, V]
        new = sampling.next_token(logits, tokens[:, :T + n], rng, num_new_tokens=n, eos_token_id=suppressed_eos,
                                  attention_mask=real[:, :T + n], min_new_tokens=min_new,
                                  **settings.sampling_kwargs())
        new = np.where(finished, eos, new)       # [B]
        finished |= new == eos
        yield new
        if finished.all() or n + 1 == max_new:   # the last token is never fed: nothing would read it
            return
        tokens[:, T + n] = new
        h = model.forward(new[:, None], np.ones((B, 1), np.int64), cache, hooks=settings.hooks)[:, -1]   # [B, 1] -> [B, d]


def generate_ids(model, prompts, **settings):
    """Token ids in, new token ids out. prompts: one list of ids (-> one list) or a list of such
    lists, of any lengths (-> a list of lists, generated together as one left-padded batch).
    Each output ends with EOS when the model stopped there."""
    single = len(prompts) == 0 or np.ndim(prompts[0]) == 0
    batch = [check_token_ids(p, model.config.vocab_size, "prompts" if single else f"prompts[{i}]")
             for i, p in enumerate([prompts] if single else prompts)]
    eos = model.config.eos_token_id
    steps = list(generate_steps(model, *prompt_batch(model.config, batch), **settings))   # N x [B]
    outputs = [cut_after_eos(row, eos) for row in np.array(steps, np.int64).reshape(-1, len(batch)).T]
    return outputs[0] if single else outputs


def cut_after_eos(row, eos_token_id):  # [N] -> list: the tokens up to and including the first EOS
    stop = np.flatnonzero(row == eos_token_id)
    return row[:stop[0] + 1 if len(stop) else len(row)].tolist()


def detokenize(token_ids, tokenizer, eos_token_id):
    """Token ids (any iterable) -> text pieces, each made only of whole characters, up to EOS."""
    detokenizer = StreamDetokenizer(tokenizer)
    for token in token_ids:
        if token == eos_token_id:
            break
        piece = detokenizer.feed(int(token))
        if piece:
            yield piece
    tail = detokenizer.flush()   # a character cut off by the end of generation, as U+FFFD
    if tail:
        yield tail


def stream_text(model, prompt, **settings):
    """One prompt -> an iterator of the new text, piece by piece as the tokens are generated."""
    eos = model.config.eos_token_id
    steps = generate_steps(model, *prompt_batch(model.config, [model.tokenizer.encode(prompt)]), **settings)
    return detokenize((new[0] for new in steps), model.tokenizer, eos)


def generate(model, prompt, stream=None, **settings):
    """The text that follows prompt (without the prompt), or a list of texts for a list of prompts,
    generated together as one batch. stream: a function called with each piece of text as soon as
    it decodes (one prompt only). settings: see Settings, e.g. max_new_tokens=50, do_sample=True,
    temperature=0.8, top_k=50, top_p=0.95, repetition_penalty=1.2, min_new_tokens=10, seed=0."""
    if isinstance(prompt, str):
        pieces = []
        for piece in stream_text(model, prompt, **settings):
            pieces.append(piece)
            if stream is not None:
                stream(piece)
        return "".join(pieces)
    if stream is not None:
        raise MinineoError("stream= works with one prompt at a time, not a list")
    if not isinstance(prompt, (list, tuple)) or not all(isinstance(p, str) for p in prompt):
        raise MinineoError(f"prompt must be a str or a list of str, got {type(prompt).__name__}")
    prompts = list(prompt)
    if not prompts:
        return []
    eos = model.config.eos_token_id
    new_ids = generate_ids(model, [model.tokenizer.encode(p) for p in prompts], **settings)
    return ["".join(detokenize(ids, model.tokenizer, eos)) for ids in new_ids]
