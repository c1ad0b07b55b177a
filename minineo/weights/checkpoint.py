"""From a Hub-layout checkpoint to minineo's nested dict of weights, every name and shape checked.

    params = {"wte": [V, d], "wpe": [P, d], "ln_f": {"g", "b"},
              "blocks": [{"ln_1": {"g", "b"},
                          "attn": {"q_proj": {"w"}, "k_proj": {"w"}, "v_proj": {"w"}, "out_proj": {"w", "b"}},
                          "ln_2": {"g", "b"}, "mlp": {"c_fc": {"w", "b"}, "c_proj": {"w", "b"}}}, ...]}

Linear weights stay [out, in] as the checkpoint stores them; `linear` computes x @ w.T. float32
weights are read-only NumPy views of the memory-mapped file (nothing is copied at load). An int8
checkpoint (written by `python -m minineo.quantize`) stores each matrix as int8 with a float32
`<name>_scale` per output row; those, and every matrix when loading with int8=True, are `Int8Weight`s.
"""
import sys

import numpy as np

from ..errors import MinineoError
from ..fast.int8 import Int8Weight, quantize
from ..fast.processes import Arena
from .files import shown
from .shards import open_checkpoint

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


FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")
# Which config.json fields give a tensor's shape, for the few whose mismatch is a common mistake.
SHAPE_FIELDS = {"transformer.wte.weight": "vocab_size x hidden_size",
                "transformer.wpe.weight": "max_position_embeddings x hidden_size"}


def check_tensors(files, config, directory):
    """Every tensor the config needs is there with its shape and a dtype minineo computes with; each
    int8 matrix has a float scale of one value per row, every one finite and > 0. Reads nothing but
    the scales (a few KB to a few MB): the weights themselves stay on disk until the model runs."""
    shapes = expected_shapes(config)
    scales = set()
    for name, shape in shapes.items():
        if name not in files:
            raise MinineoError(f"{directory}: checkpoint has no tensor {name}")
        f = files[name]
        if f.shape(name) != shape:
            fields = f" ({SHAPE_FIELDS[name]})" if name in SHAPE_FIELDS else ""
            raise MinineoError(f"{f.path}: tensor {name} has shape {list(f.shape(name))}, "
                               f"expected {list(shape)} from config.json{fields}")
        dtype = f.dtype(name)
        if dtype == "I8":
            _check_int8(files, name, shape)
            scales.add(name + SCALE_SUFFIX)
        elif dtype not in FLOAT_DTYPES:
            raise MinineoError(f"{f.path}: tensor {name} is {dtype}, expected a float tensor "
                               f"({', '.join(FLOAT_DTYPES)}) or an int8 (I8) matrix with its {name}{SCALE_SUFFIX}")
    known = set(shapes) | scales | {TIED_HEAD}
    unknown = sorted(n for n in files if n not in known and not n.endswith(IGNORED_SUFFIXES))
    if unknown:
        shown_names = [shown(n) for n in unknown[:5]]
        listed = ", ".join(shown_names) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
        print(f"minineo: {directory}: ignoring {len(unknown)} tensor(s) that GPT-Neo does not use: {listed}",
              file=sys.stderr)


def _check_int8(files, name, shape):
    """An int8 matrix's scale: present, float, one value per row, each finite and > 0. A zero scale
    would silently zero its row (as a zero-filled region of an interrupted download does), so
    quantize_rows never writes one: an all-zero row is stored with scale 1."""
    path, scale = files[name].path, name + SCALE_SUFFIX
    if len(shape) != 2:
        raise MinineoError(f"{path}: tensor {name} is int8, but only matrices can be int8 (its shape is {list(shape)})")
    if scale not in files:
        raise MinineoError(f"{path}: int8 tensor {name} has no {scale}")
    f = files[scale]
    if f.dtype(scale) not in FLOAT_DTYPES:
        raise MinineoError(f"{f.path}: tensor {scale} is {f.dtype(scale)}, expected a float tensor "
                           f"(the per-row scale of int8 {name})")
    if f.shape(scale) != shape[:1]:
        raise MinineoError(f"{f.path}: tensor {scale} has shape {list(f.shape(scale))}, expected "
                           f"{list(shape[:1])} (one scale per row of int8 {name})")
    values = f.float32(scale)
    bad = ~(np.isfinite(values) & (values > 0))
    if bad.any():
        row = int(np.argmax(bad))
        value = float(values[row])
        what = ("a NaN" if np.isnan(value) else "an infinite" if np.isinf(value) else "a zero" if value == 0
                else "a negative")
        raise MinineoError(f"{f.path}: tensor {scale} holds {what} scale ({value:g}) at row {row}, "
                           f"expected finite values > 0 (a corrupt checkpoint?)")


KEPT_FLOAT = ("transformer.wpe.weight",)   # read by position, never multiplied: small, and stays float32


def is_quantized(name, shape):  # is this tensor int8 in an int8 model (loaded with int8=True, or its copy)?
    return len(shape) == 2 and name not in KEPT_FLOAT


ROWS_AT_ONCE = 4096   # rows quantized per step: each row has its own scale, so blocks change nothing


def quantize_rows(w, q=None):  # [out, in] float32 -> Int8Weight, a block of rows at a time to bound the temporaries
    # q: where the int8 values go, [out, in] (an Arena's, which worker processes can map), else new memory
    q, scale = np.empty(w.shape, np.int8) if q is None else q, np.empty(w.shape[0], np.float32)
    for start in range(0, w.shape[0], ROWS_AT_ONCE):
        block = quantize(w[start:start + ROWS_AT_ONCE])
        q[start:start + len(block.q)], scale[start:start + len(block.q)] = block.q, block.scale
    scale[scale == 0] = 1   # an all-zero row (q is 0 there): any scale gives 0, and a checked file has none that is 0
    return Int8Weight(q, scale)


def load_params(directory, config, int8=False):
    files = open_checkpoint(directory)
    check_tensors(files, config, directory)
    # quantized into one arena: memory that int8 worker processes map too (fast/processes.py)
    quantized = [shape for name, shape in expected_shapes(config).items() if is_quantized(name, shape)]
    arena = Arena(sum(rows * cols + 64 for rows, cols in quantized)) if int8 else None

    def tensor(name):  # a vector (norms, biases) or a matrix, as float32 or Int8Weight
        f = files[name]
        if f.dtype(name) == "I8":   # its scale may sit in another shard
            scale = name + SCALE_SUFFIX
            return Int8Weight(f.raw(name), files[scale].float32(scale))
        if int8 and is_quantized(name, f.shape(name)):
            # Quantized from a copy read through the file: the float32 pages never enter our memory.
            return quantize_rows(f.float32(name, copy=True), arena.take(f.shape(name), np.int8))
        # A plain ndarray view of the mapped file: slicing a np.memmap runs Python code for every view
        # (the matmul tiles slice each weight a few times per token), an ndarray view does not.
        return np.asarray(f.float32(name))

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
            "attn": {**{p: {"w": tensor(attn + p + ".weight")} for p in ("q_proj", "k_proj", "v_proj")},
                     "out_proj": dense(attn + "out_proj")},
            "ln_2": norm(h + "ln_2"),
            "mlp": {"c_fc": dense(h + "mlp.c_fc"), "c_proj": dense(h + "mlp.c_proj")},
        })
    return {"wte": tensor("transformer.wte.weight"), "wpe": tensor("transformer.wpe.weight"),
            "blocks": blocks, "ln_f": norm("transformer.ln_f")}
