"""From a Hub-layout checkpoint to minineo's nested dict of weights, every name and shape checked.

    params = {"wte": [V, d], "wpe": [P, d], "ln_f": {"g", "b"},
              "blocks": [{"ln_1": {"g", "b"}, "attn": {"qkv": {"w"}, "out": {"w", "b"}},
                          "ln_2": {"g", "b"}, "mlp": {"c_fc": {"w", "b"}, "c_proj": {"w", "b"}}}, ...]}

Linear weights stay [out, in] as the checkpoint stores them; `linear` computes x @ w.T. q_proj,
k_proj and v_proj are stacked into one [3d, d] matrix so that one product makes all three.
An int8 checkpoint (written by `python -m minineo.quantize`) stores each matrix as int8 with a
float32 `<name>_scale` per output row; those load as `Int8Weight`s.
"""
import sys

import numpy as np

from .errors import MinineoError
from .int8 import Int8Weight, quantize
from .safetensors_io import open_shards

# Buffers that older transformers saved beside the weights (the causal mask and its fill value):
# not weights, so they are skipped. lm_head.weight is wte itself (the head is tied).
IGNORED_SUFFIXES = (".attn.attention.bias", ".attn.attention.masked_bias")
TIED_HEAD = "lm_head.weight"
SCALE_SUFFIX = "_scale"


def expected_shapes(config):
    d, inner = config.hidden_size, config.intermediate_size
    shapes = {"transformer.wte.weight": (config.vocab_size, d),
              "transformer.wpe.weight": (config.max_position_embeddings, d),
              "transformer.ln_f.weight": (d,), "transformer.ln_f.bias": (d,)}
    for i in range(config.num_layers):
        h = f"transformer.h.{i}."
        shapes.update({
            h + "ln_1.weight": (d,), h + "ln_1.bias": (d,), h + "ln_2.weight": (d,), h + "ln_2.bias": (d,),
            h + "attn.attention.q_proj.weight": (d, d), h + "attn.attention.k_proj.weight": (d, d),
            h + "attn.attention.v_proj.weight": (d, d),
            h + "attn.attention.out_proj.weight": (d, d), h + "attn.attention.out_proj.bias": (d,),
            h + "mlp.c_fc.weight": (inner, d), h + "mlp.c_fc.bias": (inner,),
            h + "mlp.c_proj.weight": (d, inner), h + "mlp.c_proj.bias": (d,),
        })
    return shapes


def _check(files, config, directory):
    shapes = expected_shapes(config)
    for name, shape in shapes.items():
        if name not in files:
            raise MinineoError(f"{directory}: checkpoint has no tensor {name}")
        if files[name].shape(name) != shape:
            raise MinineoError(f"{files[name].path}: tensor {name} has shape {list(files[name].shape(name))}, "
                               f"expected {list(shape)} from config.json")
        scale = name + SCALE_SUFFIX
        if files[name].dtype(name) == "I8" and scale not in files:
            raise MinineoError(f"{files[name].path}: int8 tensor {name} has no {scale}")
    known = set(shapes) | {name + SCALE_SUFFIX for name in shapes} | {TIED_HEAD}
    unknown = sorted(n for n in files if n not in known and not n.endswith(IGNORED_SUFFIXES))
    if unknown:
        shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        print(f"minineo: {directory}: ignoring {len(unknown)} tensor(s) that GPT-Neo does not use: {shown}",
              file=sys.stderr)


def load_params(directory, config, int8=False):
    files = open_shards(directory)
    _check(files, config, directory)

    def tensor(name, copy=False):  # a vector (norms, biases) or a matrix, as float32 or Int8Weight
        f = files[name]
        if f.dtype(name) == "I8":
            return Int8Weight(f.raw(name, copy), f.float32(name + SCALE_SUFFIX, copy))
        w = f.float32(name, copy)
        # wpe stays float32: it is small, and positions are read once per token, not multiplied.
        return quantize(w) if int8 and w.ndim == 2 and name != "transformer.wpe.weight" else w

    def stacked(names):  # the fused q/k/v matrix [3d, d]; copies are read, not mapped
        parts = [tensor(name, copy=True) for name in names]
        if isinstance(parts[0], Int8Weight):
            return Int8Weight(np.concatenate([p.q for p in parts]), np.concatenate([p.scale for p in parts]))
        return np.concatenate(parts)

    def norm(prefix):
        return {"g": tensor(prefix + ".weight"), "b": tensor(prefix + ".bias")}

    def dense(prefix):
        return {"w": tensor(prefix + ".weight"), "b": tensor(prefix + ".bias")}

    blocks = []
    for i in range(config.num_layers):
        h = f"transformer.h.{i}."
        attn = h + "attn.attention."
        blocks.append({
            "ln_1": norm(h + "ln_1"),
            "attn": {"qkv": {"w": stacked([attn + p + "_proj.weight" for p in "qkv"])},
                     "out": dense(attn + "out_proj")},
            "ln_2": norm(h + "ln_2"),
            "mlp": {"c_fc": dense(h + "mlp.c_fc"), "c_proj": dense(h + "mlp.c_proj")},
        })
    return {"wte": tensor("transformer.wte.weight"), "wpe": tensor("transformer.wpe.weight"),
            "blocks": blocks, "ln_f": norm("transformer.ln_f")}
