"""Hook points: named places in the forward pass where an activation can be read or replaced,
with TransformerLens's names (blocks.3.attn.hook_pattern) and shapes.

The model's functions call `hook("hook_z", z)` where an activation is made. With no hook attached
(NO_HOOK, every function's default) that returns z itself, so a reader can read past it and a run
without hooks pays one Python call per point. `attach` turns a list of (names, fn) pairs into the
Hook the forward pass is given; `run_with_cache` records activations into an ActivationCache.

Shapes as TransformerLens gives them: B batch, T new tokens, S keys in view, H heads, hd head size.
q, k, v and z are computed [B, H, T, hd] and shown [B, T, H, hd]. For ids of shape [T] the batch
axis is dropped, as the model's logits drop it: a hook sees [T, d], a pattern [H, T, S].
"""
import difflib

import numpy as np

from ..errors import MinineoError

HEAD_MAJOR = ("attn.hook_q", "attn.hook_k", "attn.hook_v", "attn.hook_z")
BLOCK_POINTS = ("hook_resid_pre", "ln1.hook_scale", "ln1.hook_normalized", *HEAD_MAJOR[:3],
                "attn.hook_attn_scores", "attn.hook_pattern", HEAD_MAJOR[3], "hook_attn_out", "hook_resid_mid",
                "ln2.hook_scale", "ln2.hook_normalized", "mlp.hook_pre", "mlp.hook_post", "hook_mlp_out",
                "hook_resid_post")


class Hook:
    def __init__(self, apply=None, prefix=""):
        self.apply = apply     # (full name, activation) -> activation, or None: no hook attached anywhere
        self.prefix = prefix   # where this part of the model is: "blocks.3.ln1."

    def __call__(self, name, value):   # the activation `name`, or what the attached hooks make of it
        return value if self.apply is None else self.apply(self.prefix + name, value)

    def at(self, part):   # the hook points inside `part`: NO_HOOK.at(...) is NO_HOOK, at no cost
        return self if self.apply is None else Hook(self.apply, f"{self.prefix}{part}.")

    # `f(x, **hook)` passes hook=self only when a hook is attached: a function swapped in for one of
    # the model's (a student's, a notebook's experiment) that takes no `hook` runs unchanged without.
    def keys(self):
        return () if self.apply is None else ("hook",)

    def __getitem__(self, key):
        return self


NO_HOOK = Hook()


def hook_names(num_layers):  # every hook point, in the order the forward pass reaches them
    blocks = [f"blocks.{i}.{point}" for i in range(num_layers) for point in BLOCK_POINTS]
    return ["hook_embed", "hook_pos_embed", *blocks, "ln_final.hook_scale", "ln_final.hook_normalized"]


class HookPoint:
    """What a hook function is told besides the activation: hook.name, and hook.layer() as TransformerLens's."""

    def __init__(self, name):
        self.name = name

    def layer(self):
        if not self.name.startswith("blocks."):
            raise MinineoError(f"{self.name} is not inside a block")
        return int(self.name.split(".")[1])

    def __repr__(self):
        return f"HookPoint({self.name!r})"


def closest(name, names):  # a one-line hint: the nearest known names
    near = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f"closest: {', '.join(near)}" if near else "names look like blocks.0.attn.hook_pattern"


def matching(names_filter, names):  # a name, a list of names or a predicate -> the names it picks
    if isinstance(names_filter, (str, list, tuple)):
        wanted = [names_filter] if isinstance(names_filter, str) else list(names_filter)
        for name in wanted:
            if name not in names:
                raise MinineoError(f"hook: unknown hook name {name!r} ({closest(str(name), names)})")
        return wanted
    if not callable(names_filter):
        raise MinineoError(f"hook: expected a hook name, a list of names or a predicate, got {names_filter!r}")
    picked = [name for name in names if names_filter(name)]
    if not picked:
        raise MinineoError("hook: the predicate matches no hook point (names look like blocks.0.attn.hook_pattern)")
    return picked


def attach(hooks, num_layers, squeeze):  # [(names, fn)] -> the Hook that runs each fn at its points
    if not hooks:
        return NO_HOOK
    names = hook_names(num_layers)
    table = {}
    for names_filter, fn in hooks:
        for name in matching(names_filter, names):
            table.setdefault(name, []).append(fn)

    def apply(name, value):
        for fn in table.get(name, ()):
            value = replace(name, value, fn, squeeze)
        return value

    return Hook(apply)


def replace(name, value, fn, squeeze):  # value after fn saw it as TransformerLens shows it (and maybe replaced it)
    head_major = name.endswith(HEAD_MAJOR)
    shown = value.swapaxes(1, 2) if head_major else value   # [B, H, T, hd] -> [B, T, H, hd]
    shown = shown[0] if squeeze else shown
    new = fn(shown, HookPoint(name))
    if new is None:
        return value
    if not isinstance(new, np.ndarray) or new.shape != shown.shape or new.dtype != shown.dtype:
        got = (f"{type(new).__name__}" if not isinstance(new, np.ndarray) else f"{new.dtype} {list(new.shape)}")
        raise MinineoError(f"hook at {name}: returned {got}, expected None or an array of "
                           f"{shown.dtype} {list(shown.shape)} (the activation's own shape and dtype)")
    new = new[None] if squeeze else new
    return new.swapaxes(1, 2) if head_major else new


SHORT = {**{n: "attn.hook_" + n for n in ("q", "k", "v", "z", "attn_scores", "pattern")},
         **{n: "mlp.hook_" + n for n in ("pre", "post")},
         **{n: "hook_" + n for n in ("resid_pre", "resid_mid", "resid_post", "attn_out", "mlp_out")}}


def act_name(name, layer=None, part=None):  # TransformerLens's shorthand: ("pattern", 3) -> blocks.3.attn.hook_pattern
    if name in ("embed", "pos_embed"):
        return "hook_" + name
    if name in ("scale", "normalized"):
        if layer is None:
            return "ln_final.hook_" + name
        if part not in ("ln1", "ln2"):
            raise MinineoError(f"({name!r}, {layer}): say which layer norm, e.g. ({name!r}, {layer}, 'ln1')")
        return f"blocks.{layer}.{part}.hook_{name}"
    if name in SHORT and layer is not None:
        return f"blocks.{layer}.{SHORT[name]}"
    return name


class ActivationCache(dict):
    """Activations by hook name, with TransformerLens's shorthand: cache["pattern", 3],
    cache["resid_post", 5], cache["scale"] (ln_final's), cache["normalized", 2, "ln1"]."""

    def __getitem__(self, key):
        name = act_name(*key) if isinstance(key, tuple) else act_name(key)
        if name not in self:
            raise MinineoError(f"activation cache: no {name!r} ({closest(str(name), list(self)) if self else 'the cache is empty'})")
        return dict.__getitem__(self, name)

    def save(self, activation, hook):
        self[hook.name] = activation


def run_with_cache(model, ids, names_filter=None, attention_mask=None, cache=None, fwd_hooks=()):
    # -> logits, ActivationCache. fwd_hooks run first, so the cache holds what they made.
    activations = ActivationCache()
    picked = (lambda name: True) if names_filter is None else names_filter
    logits = model(ids, attention_mask, cache, hooks=[*fwd_hooks, (picked, activations.save)])
    return logits, activations
