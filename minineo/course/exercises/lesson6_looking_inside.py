"""Lesson 6: looking inside: a head-ablation hook, the logit lens, an activation-patching grid.

The cases run a tiny GPT-Neo of random weights (3 layers, 4 heads, window 4, vocabulary 40), built here in
memory: large enough that every usual slip changes the numbers, small enough that a grid takes milliseconds.
The student's functions are judged by what they make the model compute (logits, a lens, a grid).
"""
import functools

import numpy as np

from ...interpret.methods import ablate_heads, logit_lens, patch_grid
from ...model.attention import softmax
from ...model.config import Config
from ...model.gpt_neo import GPTNeo
from ...model.layer_norm import layer_norm
from .base import Case, Exercise, Mistake, rand

CONFIG = Config(vocab_size=40, hidden_size=16, num_layers=3, num_heads=4, intermediate_size=32, window_size=4,
                attention_layers=("global", "local", "global"), max_position_embeddings=32, eos_token_id=39)


@functools.cache
def tiny_model(seed=600):  # a random GPT-Neo whose heads, biases and norms all matter
    c, d = CONFIG, CONFIG.hidden_size
    seeds = iter(range(seed, seed + 1000))

    def dense(n_out, n_in, bias=True, scale=0.4):
        return {"w": rand(next(seeds), n_out, n_in, scale=scale), **({"b": rand(next(seeds), n_out, scale=0.1)} if bias else {})}

    def norm():
        return {"g": rand(next(seeds), d, scale=0.2, offset=1), "b": rand(next(seeds), d, scale=0.1)}
    blocks = [{"ln_1": norm(), "attn": {"q_proj": dense(d, d, False, 0.6), "k_proj": dense(d, d, False, 0.6),
                                       "v_proj": dense(d, d, False), "out_proj": dense(d, d)},
               "ln_2": norm(), "mlp": {"c_fc": dense(c.intermediate_size, d), "c_proj": dense(d, c.intermediate_size, scale=0.2)}}
              for _ in range(c.num_layers)]
    params = {"wte": rand(next(seeds), c.vocab_size, d), "wpe": rand(next(seeds), c.max_position_embeddings, d, scale=0.5),
              "blocks": blocks, "ln_f": norm()}
    return GPTNeo(c, params, source="a tiny random GPT-Neo (the checker's)")


def ids(seed, *shape):
    return np.random.default_rng(seed).integers(0, CONFIG.vocab_size, shape)


# ---- ablate_heads: hooks that knock heads out in z -------------------------------------------------------

def ablated_logits(fn, tokens, heads, how="zero", cache=None):  # the student's hooks, run in the tiny model
    return tiny_model().run_with_hooks(tokens, fwd_hooks=fn(heads, how=how, cache=cache))


def ablate_cases():
    def mean(heads):
        def build():
            _, cache = tiny_model().run_with_cache(ids(612, 3, 6))   # the mean over another batch's positions
            return (ids(613, 2, 6), heads), {"how": "mean", "cache": cache}
        return build
    return [
        Case("zero head 1 of layer 0 (batch 2, 6 tokens)", lambda: ((ids(610, 2, 6), [(0, 1)]), {})),
        Case("zero head 0 of layer 1 and head 3 of layer 2", lambda: ((ids(611, 2, 6), [(1, 0), (2, 3)]), {})),
        Case("zero two heads of the same layer (1.2 and 1.0)", lambda: ((ids(614, 2, 6), [(1, 2), (1, 0)]), {})),
        Case("mean-ablate head 2 of layer 0: its mean z over a cached batch of 3, every position", mean([(0, 2)])),
        Case("mean-ablate heads 1 and 3 of layer 2", mean([(2, 1), (2, 3)])),
    ]


def _ablate_variant(where):  # ablate_heads, with each hook made by where(layer, heads, how, cache) -> (name, fn)
    def variant(heads, how="zero", cache=None):
        by_layer = {}
        for layer, head in heads:
            by_layer.setdefault(layer, []).append(head)
        return [where(layer, chosen, how, cache) for layer, chosen in sorted(by_layer.items())]
    return variant


def _after_out_proj(layer, chosen, how, cache):  # zeroes head h's slice of the block's attention output
    hd = CONFIG.head_size

    def hook(out, hook):
        out = out.copy()
        for h in chosen:
            part = slice(h * hd, (h + 1) * hd)
            out[..., part] = 0 if how == "zero" else cache["attn_out", layer][..., part].reshape(-1, hd).mean(0)
        return out
    return f"blocks.{layer}.hook_attn_out", hook


def _in_z(fill):  # a hook in z that writes fill(z, layer, chosen, how, cache) where the heads were
    def where(layer, chosen, how, cache):
        def hook(z, hook):
            z = z.copy()
            z[..., chosen, :] = 0 if how == "zero" else fill(layer, chosen, cache, z)
            return z
        return f"blocks.{layer}.attn.hook_z", hook
    return where


def _position_not_head(layer, chosen, how, cache):  # z read as [..., H, T, hd]: position h is knocked out
    def hook(z, hook):
        z = z.copy()
        z[..., chosen, :, :] = 0 if how == "zero" else cache["z", layer].reshape(-1, *z.shape[-2:]).mean(0)[chosen]
        return z
    return f"blocks.{layer}.attn.hook_z", hook


def _last_head_only(heads, how="zero", cache=None):  # {layer: head}: a second head of a layer overwrites the first
    return ablate_heads(list({layer: head for layer, head in heads}.items()), how, cache)


ABLATE_HEADS = Exercise("ablate_heads", 6, ablate_heads, ablate_cases, [
    Mistake("ablates after out_proj (zeroes the head's slice of hook_attn_out): out_proj has already mixed the "
            "heads, so that slice is a bit of every head, not this one",
            "ablate in z (blocks.{layer}.attn.hook_z, [..., T, H, hd]), before out_proj: z[..., head, :] = 0",
            _ablate_variant(_after_out_proj)),
    Mistake("indexes z as [..., H, T, hd]: it knocks out a position of every head, not a head",
            "z is [..., T, H, hd] as TransformerLens shows it: z[..., head, :]", _ablate_variant(_position_not_head)),
    Mistake("keeps one head per layer (a dict keyed by layer): of two heads in one layer only the last is ablated",
            "collect every head of a layer and ablate them all", _last_head_only),
    Mistake("takes the mean over every head, not the head's own",
            "each head gets its own mean z over the cached batch and positions: "
            "cache['z', layer].reshape(-1, H, hd).mean(0)[head]",
            _ablate_variant(_in_z(lambda layer, chosen, cache, z: cache["z", layer].reshape(-1, z.shape[-1]).mean(0)))),
    Mistake("takes the mean over the batch only, so each position keeps its own mean",
            "the mean over the batch and every position: cache['z', layer].reshape(-1, H, hd).mean(0)[head]",
            _ablate_variant(_in_z(lambda layer, chosen, cache, z: cache["z", layer].mean(0)[..., chosen, :]))),
], call=ablated_logits, checks_inputs=False, in_model=False)


# ---- logit_lens: every layer's stream read as if it were the last ------------------------------------------

def lens_cases():
    def of(tokens):
        return lambda: ((tiny_model(), tiny_model().run_with_cache(tokens)[1]), {})
    return [
        Case("one sequence of 7 tokens: a lens [L + 1, T, V] = [4, 7, 40]", of(ids(620, 7))),
        Case("a batch of 2 sequences of 5 tokens: [4, 2, 5, 40]", of(ids(621, 2, 5))),
    ]


def _lens_of(read):  # the lens with each stream read by read(model, stack) -> logits
    def lens(model, cache):
        stack = np.stack([cache["resid_pre", i] for i in range(model.config.num_layers)] +
                         [cache["resid_post", model.config.num_layers - 1]])
        return read(model, stack)
    return lens


def _through_ln_final(model, stack):
    return model.logits(layer_norm(stack, **model.params["ln_f"], eps=model.config.layer_norm_epsilon))


LOGIT_LENS = Exercise("logit_lens", 6, logit_lens, lens_cases, [
    Mistake("leaves out ln_final: multiplies the raw residual stream by the unembedding",
            "the model reads its last stream through ln_final and then the unembedding: each layer's lens does the same",
            _lens_of(lambda model, stack: model.logits(stack))),
    Mistake("reads each block's output (resid_post) only: L rows, the embeddings' row (resid_pre of block 0) missing",
            "L + 1 rows: resid_pre of every block, then the last block's resid_post",
            lambda model, cache: _through_ln_final(model, np.stack([cache["resid_post", i]
                                                                     for i in range(model.config.num_layers)]))),
    Mistake("returns probabilities (a softmax of the lens's logits)", "return logits, as the model does",
            _lens_of(lambda model, stack: softmax(_through_ln_final(model, stack)))),
    Mistake("applies ln_final's g and b without normalising (x * g + b)",
            "layer_norm(x, **ln_f): normalise, then scale and shift",
            _lens_of(lambda model, stack: model.logits(stack * model.params["ln_f"]["g"] + model.params["ln_f"]["b"]))),
], checks_inputs=False, in_model=False, uses=("layer_norm",))


# ---- patch_resid_pre: activation patching, a [layer, position] grid ------------------------------------------

def patch_resid_pre(model, clean_ids, corrupted_ids, metric):  # [T], [T], fn(logits [T, V]) -> float => [L, T]
    # The corrupted run with the clean run's resid_pre of one layer at one position put in, for every
    # layer and position: grid[l, t] = metric(those logits). minineo's patch_grid computes the same grid
    # faster (each patched run resumes at its layer instead of recomputing the layers below).
    return patch_grid(model, clean_ids, corrupted_ids, metric, "resid_pre")


def logit_difference(right, wrong):  # a metric: how much the last position prefers token right to token wrong
    def metric(logits):
        return float(logits[-1, right] - logits[-1, wrong])
    return metric


def patch_cases():
    clean = ids(630, 6)
    corrupted = clean.copy()
    corrupted[1] = (clean[1] + 7) % CONFIG.vocab_size   # one token changed: the grid shows where its effect travels
    long_clean = ids(631, 9)
    long_corrupted = long_clean.copy()
    long_corrupted[:3] = ids(632, 3)
    return [
        Case("6 tokens, token 1 changed; metric: the last position's logit of token 5 minus token 9",
             lambda: ((tiny_model(), clean, corrupted, logit_difference(5, 9)), {})),
        Case("9 tokens, the first 3 changed (the window is 4: position 8 sees them only through a global layer); "
             "metric: logit of 17 minus 2", lambda: ((tiny_model(), long_clean, long_corrupted, logit_difference(17, 2)), {})),
    ]


def _patching(point="hook_resid_pre", put=None, direction="clean into corrupted"):
    """patch_resid_pre by hand, with one of the usual slips: put(act, clean, t) writes the patch."""
    put = put or (lambda act, piece, t: act.__setitem__(t, piece[t]))

    def grid_of(model, clean_ids, corrupted_ids, metric):
        source, target = (clean_ids, corrupted_ids) if direction == "clean into corrupted" else (corrupted_ids, clean_ids)
        L, T = model.config.num_layers, len(clean_ids)
        _, cache = model.run_with_cache(source)
        grid = np.empty((L, T))
        for layer in range(L):
            name = f"blocks.{layer}.{point}"
            for t in range(T):
                def patch(act, hook, t=t):
                    act = act.copy()
                    put(act, cache[name], t)
                    return act
                grid[layer, t] = metric(model.run_with_hooks(target, fwd_hooks=[(name, patch)]))
        return grid
    return grid_of


PATCH_RESID_PRE = Exercise("patch_resid_pre", 6, patch_resid_pre, patch_cases, [
    Mistake("patches the wrong position: every position from t on, not t alone",
            "grid[l, t] puts in the clean resid_pre of layer l at position t only: act[t] = clean[t]",
            _patching(put=lambda act, piece, t: act.__setitem__(slice(t, None), piece[t:]))),
    Mistake("patches the wrong position: indexes the [T, d] activation as [B, T, d], so act[:, t] is feature t of "
            "every position", "for ids [T] the hook sees [T, d]: act[t] = clean[t]",
            _patching(put=lambda act, piece, t: act.__setitem__((slice(None), t), piece[:, t]))),
    Mistake("patches the wrong way round: the corrupted activation into the clean run",
            "run the corrupted ids and put in the clean run's activation: the grid shows where the clean run's "
            "information restores the answer", _patching(direction="corrupted into clean")),
    Mistake("patches hook_resid_post (the block's output) instead of hook_resid_pre (its input)",
            "resid_pre of layer l: the stream entering block l", _patching(point="hook_resid_post")),
], checks_inputs=False, in_model=False)
