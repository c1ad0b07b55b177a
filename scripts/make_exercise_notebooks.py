"""Writes notebooks/exercises/*.ipynb from the stub file (minineo/course/neo_exercises.py) and the lesson
texts below, so that the stubs a student sees in a notebook are the stub file's, character for character.

    python scripts/make_exercise_notebooks.py        (tests/test_course.py checks the notebooks are up to date)
"""
import ast
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STUBS = ROOT / "minineo" / "course" / "neo_exercises.py"
OUT = ROOT / "notebooks" / "exercises"

SETUP = """import matplotlib.pyplot as plt
import numpy as np

from minineo.course import check, in_model   # check(name, fn) compares fn with minineo's; in_model puts it in the model"""

LESSONS = [
    dict(file="1_embeddings_and_lm_head", title="Exercise 1. Tokens in, logits out: embeddings and the tied LM head",
         minutes="20 to 30 minutes", objectives=[
             "look a token and its position up in two tables and add them: the model's input",
             "say why positions do not always start at 0 (a KV cache, left padding)",
             "score every token of the vocabulary with the same matrix that embedded the tokens (the tied head)"],
         intro="The first and the last step of GPT-Neo. A token id picks a row of `wte` [V, d]; its position picks "
               "a row of `wpe` [max_positions, d]; their sum enters the first block. At the end, `lm_head` turns "
               "each final vector into V scores (logits) with `wte` again: no separate output matrix.",
         figure="""import minineo
model = minineo.load(None, fast=False)   # the bundled Shakespeare model
wpe = model.params["wpe"]
similarity = (wpe / np.linalg.norm(wpe, axis=1, keepdims=True)) @ (wpe / np.linalg.norm(wpe, axis=1, keepdims=True)).T
plt.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1)
plt.colorbar(label="cosine similarity")
plt.title("the learnt position embeddings: nearby positions look alike")
plt.xlabel("position"); plt.ylabel("position");""",
         exercises={"embed": "Positions come in as an argument: after 7 cached tokens the next ones are at 7, 8, ...; "
                             "in a left-padded batch the pads sit at position 1 and real tokens count from 0.",
                    "lm_head": "Logits, not probabilities: the softmax belongs to sampling and to the loss."},
         in_model="embed"),
    dict(file="2_layer_norm", title="Exercise 2. Layer norm", minutes="15 to 25 minutes", objectives=[
        "normalise each token's features to mean 0 and variance 1, then scale and shift them",
        "tell the biased variance from the unbiased one, and see where epsilon goes",
        "see what a small slip in one function does to the held-out loss of a whole model"],
         intro="$$\\mathrm{LN}(x) = g \\odot \\frac{x - \\mu}{\\sqrt{\\sigma^2 + \\epsilon}} + b, \\qquad "
               "\\mu = \\frac{1}{d}\\sum_i x_i, \\quad \\sigma^2 = \\frac{1}{d}\\sum_i (x_i - \\mu)^2$$\n\n"
               "Every token is normalised on its own, over its $d$ features (the last axis).",
         figure="""rng = np.random.default_rng(0)
x = (rng.standard_normal((200, 64)) * rng.uniform(0.1, 5, (200, 1)) + rng.uniform(-3, 3, (200, 1))).astype(np.float32)
from minineo.model.layer_norm import layer_norm as reference
y = reference(x, np.ones(64, np.float32), np.zeros(64, np.float32))
bins = np.linspace(0, 6, 61)
plt.hist(x.std(axis=1), bins=bins, alpha=0.6, label="before: each token's std")
plt.hist(y.std(axis=1), bins=bins, alpha=0.6, label="after layer norm: all 1")
plt.xlabel("standard deviation of one token's features"); plt.legend();""",
         exercises={"layer_norm": "The classic slips: `np.var(ddof=1)` or `torch.var` (unbiased), epsilon outside "
                                  "the square root, a fixed epsilon instead of `eps`, `x -= mean` (changes the "
                                  "caller's array), and E[x²] - E[x]², which float32 rounding ruins when the mean "
                                  "is large."},
         in_model="layer_norm"),
    dict(file="3_attention", title="Exercise 3. Attention, global and local", minutes="60 to 90 minutes", objectives=[
        "write a softmax that survives large scores and fully masked rows",
        "build GPT-Neo's causal and sliding-window masks from sequence indices",
        "mask with the most negative float32, and know why GPT-Neo does not scale by 1/sqrt(head size)",
        "split the hidden size into heads and merge them back, and put it all together as self-attention"],
         intro="$$\\mathrm{Attention}(Q, K, V) = \\mathrm{softmax}\\big(QK^\\top + M\\big)\\,V$$\n\n"
               "with no $1/\\sqrt{d_{head}}$: GPT-Neo's training folded it into the query weights. $M$ hides the "
               "keys a query may not see: later ones (global layers), and also those `window` or more tokens back "
               "(local layers). Masked scores become `np.finfo(np.float32).min`, not `-inf`.",
         figure="""from minineo.model.attention import causal_mask as reference
idx = np.arange(12)
fig, axes = plt.subplots(1, 2, figsize=(8, 4))
for ax, window, name in [(axes[0], None, "global"), (axes[1], 4, "local, window 4")]:
    ax.imshow(reference(idx, idx, window), cmap="Greys")
    ax.set(title=name, xlabel="key j", ylabel="query i")""",
         exercises={"softmax": "Subtract each row's max before `exp`.",
                    "causal_mask": "Compare the indices, not row and column numbers: after a KV cache the queries "
                                   "are the last tokens. A local query sees exactly `window` keys, itself included.",
                    "attention": "A padded query sees no real key: its row is fully masked. GPT-Neo then gives it "
                                 "equal weights (its output is ignored); `-inf` would give NaN.",
                    "split_heads": "Head h takes features h*hd .. (h+1)*hd - 1 of each token.",
                    "merge_heads": "The inverse of `split_heads`.",
                    "self_attention": "Use your own functions from above. The mask is `causal_mask(...)` and "
                                      "`real` (no padding key) together, broadcast to [B, 1, T, S]."},
         in_model="attention"),
    dict(file="4_mlp_and_block", title="Exercise 4. The MLP and the transformer block", minutes="30 to 45 minutes",
         objectives=["write GPT-Neo's activation, the tanh approximation of GELU, and see how far it is from the exact one",
                     "write the MLP (d -> 4d -> d)", "wire a pre-norm residual block"],
         intro="$$\\mathrm{gelu\\_new}(x) = \\tfrac{1}{2}\\,x\\left(1 + \\tanh\\!\\Big(\\sqrt{2/\\pi}\\,"
               "\\big(x + 0.044715\\,x^3\\big)\\Big)\\right)$$\n\nA block: `x = x + attention(ln_1(x))`, then "
               "`x = x + mlp(ln_2(x))`. The stream itself is never normalised, only the copy each sublayer reads.",
         figure="""import math
from minineo.model.mlp import gelu_new as reference
x = np.linspace(-5, 5, 401).astype(np.float32)
exact = 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.5))
left.plot(x, reference(x), label="gelu_new (tanh)"); left.plot(x, np.maximum(x, 0), "--", label="ReLU"); left.legend()
right.plot(x, reference(x) - exact); right.set(title="gelu_new minus the exact (erf) GELU", xlabel="x")""",
         needs=["layer_norm", "self_attention"],
         exercises={"gelu_new": "Not the exact GELU with erf: GPT-Neo was trained with the tanh approximation.",
                    "feed_forward": "Two linear layers, each with a bias, and `gelu_new` between them.",
                    "block": "Pre-norm: normalise before each sublayer, add its output to the stream."},
         in_model="gelu_new"),
    dict(file="5_cache_and_sampling", title="Exercise 5. Generating: the KV cache and sampling",
         minutes="45 to 60 minutes", objectives=[
             "keep each layer's keys and values so that a new token costs one step, not a re-run of the prefix",
             "keep only a window's worth in a local layer",
             "turn logits into a sampling distribution: temperature, top-k, top-p, as transformers does"],
         intro="Generating a token at a time, each layer needs the keys and values of the tokens before: a global "
               "layer all of them, a local layer only the last `window - 1`. Then the next token is chosen from the "
               "logits: divided by a temperature, cut to the k most likely (top-k) and to the most likely ones that "
               "hold probability top_p (top-p), then sampled.",
         figure="""from minineo.model.attention import softmax as reference
logits = np.array([3.0, 2.5, 2.0, 1.0, 0.5, 0.0, -0.5, -1.0], np.float32)
for t in (0.5, 1.0, 2.0):
    plt.plot(reference(logits / np.float32(t)), "o-", label=f"temperature {t}")
plt.xlabel("token"); plt.ylabel("probability"); plt.legend();""",
         needs=["softmax"],
         exercises={"GlobalCache": "`update` gets this step's keys and values [B, H, T, hd] and returns all of "
                                   "them so far with their indices.",
                    "LocalCache": "Keep the last `window - 1` keys: a new query sees `window` keys, itself included.",
                    "apply_temperature": "Keep float32.",
                    "top_k_filter": "Ties with the k-th largest logit all survive (as transformers).",
                    "top_p_filter": "Sort, add up probabilities from the most likely token, keep the one that "
                                    "crosses top_p too."},
         in_model="LocalCache"),
    dict(file="6_looking_inside", title="Exercise 6. Looking inside: ablation, the logit lens, patching",
         minutes="45 to 60 minutes", objectives=[
             "knock a head out with a hook in its output z, and say why after out_proj is too late",
             "read every layer's residual stream as a prediction (the logit lens), through the final layer norm",
             "find where information travels by activation patching: a [layer, position] grid"],
         intro="The model's hook points carry TransformerLens's names: `model.run_with_cache(ids)` returns the logits "
               "and every activation by name (`cache[\"z\", 2]` is `blocks.2.attn.hook_z`, [T, H, hd] for ids [T]); "
               "`model.run_with_hooks(ids, fwd_hooks=[(name, fn)])` calls `fn(activation, hook)` there, and what it "
               "returns replaces the activation. The checks run your functions on a tiny random GPT-Neo "
               "(3 layers, 4 heads); the last cell runs them on the bundled Shakespeare model.",
         figure="""import minineo
from minineo.interpret import lens_loss
model = minineo.load(None, fast=False)   # the bundled Shakespeare model
ids = np.array(model.tokenizer.encode("PROSPERO.\\nNow does my project gather to a head: my charms crack not."))
logits, cache = model.run_with_cache(ids)
plt.plot(lens_loss(model, cache, ids), "o-")
plt.xlabel("layer (the stream entering it; the last: the model's output)"); plt.ylabel("next-token loss (nats)")
plt.title("the logit lens: how well each layer's stream already predicts");""",
         needs=["layer_norm"],
         exercises={"ablate_heads": "One hook per layer, in `blocks.{layer}.attn.hook_z`; z is [..., T, H, hd]. "
                                    "Two heads of one layer both go.",
                    "logit_lens": "L + 1 rows: the stream entering each block, then the last block's output. "
                                  "Through `ln_f` first, as the model reads its last stream.",
                    "patch_resid_pre": "The corrupted run, with one clean piece put in; for ids [T] the hook sees "
                                       "[T, d], so position t is `act[t]`."},
         finale="""## Your functions on the bundled model

Your `logit_lens` on the line above: the token each layer's stream puts first at each position. Where the
model's own prediction (the last row) first appears is where the layers below have done the work.""",
         finale_code="""try:
    lens = logit_lens(model, cache)
except NotImplementedError:
    print("logit_lens: not written yet: write it above, then run this cell again")
else:
    top = lens.argmax(-1)   # [L + 1, T]
    for layer, row in enumerate(top):
        print(f"{layer}: " + " ".join(repr(model.tokenizer.decode([int(t)]))[1:-1][:8].ljust(8) for t in row[:10]))"""),
]


def stub_sources():  # name -> its source text in the stub file, comments on the def line included
    source = STUBS.read_text(encoding="utf-8")
    lines = source.splitlines()
    return {node.name: "\n".join(lines[node.lineno - 1:node.end_lineno])
            for node in ast.parse(source).body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}


def cell(kind, text):
    base = {"cell_type": kind, "metadata": {}, "source": text}
    return base if kind == "markdown" else {**base, "execution_count": None, "outputs": []}


WHERE = ("**Where you write:** in this notebook, in each function's code cell below (replace `raise "
         "NotImplementedError`), then run that cell and the check under it. The check compares yours with minineo's own "
         "on inputs chosen to expose the usual mistakes, and names the mistake when they differ; minineo's function "
         "(named in the docstring) is the solution: read it once yours passes. Your copy of this notebook sits beside "
         "`neo_exercises.py`, the same stubs as one file (`python -m minineo.course setup DIR` made both): paste a "
         "function that passes into it to keep it for later lessons and for `python -m minineo.check all "
         "neo_exercises.py`.")


def earlier_cells(lesson):  # the functions of earlier lessons this one calls: from the student's file
    needs = lesson.get("needs")
    if not needs:
        return []
    names = ", ".join(f"`{n}`" for n in needs)
    return [cell("markdown", f"## From earlier lessons\n\nThis notebook's functions call {names}. The cell below "
                             "takes yours from `neo_exercises.py` beside this notebook (with the functions they call "
                             "there), and minineo's own wherever yours is not written yet; it says which for each."),
            cell("code", f"from minineo.course import earlier\n{', '.join(needs)} = earlier({', '.join(map(repr, needs))})")]


def notebook(lesson, stubs):
    objectives = "\n".join(f"- {o}" for o in lesson["objectives"])
    cells = [cell("markdown", f"# {lesson['title']}\n\n**Time:** {lesson['minutes']} (writing and checking every "
                              f"function below).\n\n**You will:**\n{objectives}\n\n{lesson['intro']}\n\n{WHERE}"),
             cell("code", SETUP), cell("code", lesson["figure"]), *earlier_cells(lesson)]
    for name, hint in lesson["exercises"].items():
        cells += [cell("markdown", f"## `{name}`\n\n{hint}"), cell("code", stubs[name]),
                  cell("code", f'check("{name}", {name})')]
    if "finale" in lesson:
        cells += [cell("markdown", lesson["finale"]), cell("code", lesson["finale_code"])]
    target = lesson.get("in_model")
    cells += [] if target is None else [cell("markdown", f"## Your `{target}` in the model\n\nThe bundled model with your `{target}` in place of "
                               "minineo's: its held-out loss (nats per token on a play it never saw) and a few tokens "
                               "it writes, beside the reference's. Plant a mistake and run this again."),
              cell("code", f'in_model("{target}", {target})')]
    for i, c in enumerate(cells):
        c["id"] = f"{lesson['file']}-{i}"
    return {"cells": cells, "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                                         "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}


def notebooks():  # file name -> notebook JSON text, written as strip_notebooks.py writes a stripped notebook
    spec = importlib.util.spec_from_file_location("strip_notebooks", Path(__file__).resolve().parent / "strip_notebooks.py")
    strip_notebooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(strip_notebooks)
    stubs = stub_sources()
    return {f"{lesson['file']}.ipynb": strip_notebooks.dumps(notebook(lesson, stubs)) for lesson in LESSONS}


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in notebooks().items():
        (OUT / name).write_text(text, encoding="utf-8")
        print(OUT / name)
