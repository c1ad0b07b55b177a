"""The course kit: every exercise passes on minineo's own function and on correct solutions written
differently, and fails on mistakes as a student writes them, with the mistake named."""
import os
import subprocess
import sys
import textwrap
from unittest import mock
from pathlib import Path

import numpy as np
import pytest

from minineo.course.checker import check
from minineo.course.exercises import EXERCISES

ROOT = Path(__file__).resolve().parent.parent
OTHER_SOLUTIONS = Path(__file__).resolve().parent / "course" / "other_solutions.py"
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))


def cli(*args, cwd=None):
    done = subprocess.run([sys.executable, "-m", "minineo.check", *map(str, args)], capture_output=True, text=True,
                          env=ENV, cwd=cwd, timeout=300)
    print(done.stdout, done.stderr)
    return done


def student(source, name, tmp_path):  # a student's function, from their source text, through the file loader
    from minineo.course.student import load_file
    path = tmp_path / f"student_{abs(hash(source))}.py"
    path.write_text("import math\nimport numpy as np\nfrom minineo.model.attention import *\n"
                    "from minineo.model.linear import linear\nfrom minineo.model.layer_norm import layer_norm\n"
                    "from minineo.model.mlp import feed_forward\nfrom minineo.model.cache import GlobalCache, LocalCache\n"
                    "from minineo.text.sampling import top_k_filter, top_p_filter\n" + textwrap.dedent(source))
    return getattr(load_file(path), name), path


@pytest.mark.parametrize("name", EXERCISES)
def test_the_reference_passes(name):
    result = check(EXERCISES[name], EXERCISES[name].reference)
    assert result.ok, "\n".join(result.lines)


@pytest.mark.parametrize("name", EXERCISES)
def test_each_known_mistake_is_named(name):
    # the diagnosis machinery: each variant, run as if a student wrote it, is told apart from the others
    exercise = EXERCISES[name]
    assert len(exercise.mistakes) >= 2
    for mistake in exercise.mistakes:
        result = check(exercise, mistake.fn)
        assert not result.ok and mistake.what in result.summary, f"{mistake.what}:\n" + "\n".join(result.lines)


def test_correct_solutions_written_differently_pass():
    done = cli("all", OTHER_SOLUTIONS)
    assert done.returncode == 0 and f"{len(EXERCISES)} of {len(EXERCISES)} exercises pass" in done.stdout


# Mistakes as students write them (not minineo's variants): at least two per exercise, each with
# words that its diagnosis must contain.
PLANTED = [
    ("embed", "def embed(ids, positions, wte, wpe):\n    return wte[ids] + wpe[np.arange(ids.shape[1])]", "ignores `positions`"),
    ("embed", "def embed(ids, positions, wte, wpe):\n    return wte[ids].copy()", "leaves out the position embedding"),
    ("embed", "def embed(ids, positions, wte, wpe):\n    return wte[ids] + wpe[positions + 1]", "counts positions from 1"),
    ("embed", "def embed(ids, positions, wte, wpe):\n    return wte[ids] + wpe[np.arange(1, ids.shape[-1] + 1)]",
     "counts positions from 1"),
    ("lm_head", "def lm_head(h, wte):\n    z = h @ wte.T\n    e = np.exp(z - z.max(-1, keepdims=True))\n"
                "    return e / e.sum(-1, keepdims=True)", "returns probabilities"),
    ("lm_head", "def lm_head(h, wte):\n    return h.astype(np.float64) @ wte.T.astype(np.float64)", "dtype differs: expected float32, seen float64"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    return g * (x - x.mean(-1, keepdims=True)) / "
                   "np.sqrt(np.var(x, axis=-1, ddof=1, keepdims=True) + eps) + b", "unbiased variance"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    return g * (x - x.mean(-1, keepdims=True)) / "
                   "(np.std(x, axis=-1, keepdims=True) + eps) + b", "epsilon outside the square root"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    x -= x.mean(-1, keepdims=True)\n"
                   "    return g * x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) + b", "changed the caller's `x` in place"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    x = x.astype(np.float64)\n    m = x.mean(-1, keepdims=True)\n"
                   "    return g * (x - m) / np.sqrt(((x - m) ** 2).mean(-1, keepdims=True) + eps) + b", "dtype differs: expected float32, seen float64"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    m = x.mean(-1, keepdims=True)\n"
                   "    return g * (x - m) / np.sqrt((x * x).mean(-1, keepdims=True) - m * m + eps) + b", "E[x^2] - E[x]^2"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    m = x.mean(-1, keepdims=True)\n"
                   "    y = g * (x - m) / np.sqrt(x.var(-1, keepdims=True) + eps) + b\n    return y.reshape(-1, x.shape[-1])",
     "wrong shape"),
    ("layer_norm", "def layer_norm(x, g, b, eps=1e-5):\n    m = x.mean(-1, keepdims=True)\n"
                   "    return g * (x - m) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) + b", "ignores the `eps` argument"),
    ("softmax", "def softmax(x):\n    e = np.exp(x)\n    return e / e.sum(-1, keepdims=True)", "does not subtract the row's max"),
    ("softmax", "def softmax(x):\n    e = np.exp(x - x.max(0))\n    return e / e.sum(0)", "wrong axis"),
    ("causal_mask", "def causal_mask(q_idx, k_idx, window=None):\n    o = q_idx[:, None] - k_idx[None, :]\n"
                    "    return (o >= 0) & (o <= window) if window else o >= 0", "window + 1 keys"),
    ("causal_mask", "def causal_mask(q_idx, k_idx, window=None):\n    m = np.tril(np.ones((len(q_idx), len(k_idx)), bool))\n"
                    "    return m if window is None else m & ~np.tril(m, -window)", "row and column numbers"),
    ("attention", "def attention(q, k, v, mask):\n    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])\n"
                  "    return softmax(np.where(mask, s, np.finfo(np.float32).min)) @ v", "1/sqrt(head size)"),
    ("attention", "def attention(q, k, v, mask):\n    s = np.where(mask, q @ k.swapaxes(-1, -2), -np.inf)\n"
                  "    e = np.exp(s - s.max(-1, keepdims=True))\n    return (e / e.sum(-1, keepdims=True)) @ v", "-inf"),
    ("attention", "def attention(q, k, v, mask):\n    return (softmax(q @ k.swapaxes(-1, -2)) * mask) @ v", "after the softmax"),
    ("split_heads", "def split_heads(x, n_head):\n    B, T, d = x.shape\n    return x.reshape(B, n_head, T, d // n_head)",
     "without the transpose"),
    ("split_heads", "def split_heads(x, n_head):\n    B, T, d = x.shape\n"
                    "    return np.stack([x[..., h::n_head] for h in range(n_head)], axis=1)", "in turn"),
    ("merge_heads", "def merge_heads(x):\n    B, H, T, hd = x.shape\n    return x.reshape(B, T, H * hd)", "without the transpose"),
    ("merge_heads", "def merge_heads(x):\n    return x.transpose(0, 2, 3, 1).reshape(x.shape[0], x.shape[2], -1)",
     "interleaves"),
    ("self_attention", "def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):\n"
                       "    q, k, v = (split_heads(linear(x, **p), at.n_head) for p in (q_proj, k_proj, v_proj))\n"
                       "    k_idx = at.q_idx\n    if at.cache is not None:\n        k, v, k_idx = at.cache.update(k, v)\n"
                       "    mask = causal_mask(at.q_idx, k_idx, at.window) & at.real[:, None, None, k_idx]\n"
                       "    return linear(merge_heads(attention(q / math.sqrt(q.shape[-1]), k, v, mask)), **out_proj)",
     "1/sqrt(head size)"),
    ("self_attention", "def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):\n"
                       "    q, k, v = (split_heads(linear(x, **p), at.n_head) for p in (q_proj, k_proj, v_proj))\n"
                       "    k_idx = at.q_idx\n    if at.cache is not None:\n        k, v, k_idx = at.cache.update(k, v)\n"
                       "    return linear(merge_heads(attention(q, k, v, causal_mask(at.q_idx, k_idx, at.window))), **out_proj)",
     "ignores the padding"),
    ("gelu_new", "def gelu_new(x):\n    return np.array([0.5 * a * (1 + math.erf(a / math.sqrt(2))) for a in x.ravel()],"
                 " np.float32).reshape(x.shape)", "exact GELU"),
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 2)))", "x^2"),
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.0447 * x ** 3)))",
     "constant slipped"),
    # a relative slip of 1e-4 in either constant, one way or the other, is caught and named
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * 1.0001 * x ** 3)))",
     "constant slipped"),
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * 0.9999 * x ** 3)))",
     "constant slipped"),
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * 1.0001 * (x + 0.044715 * x ** 3)))",
     "constant slipped"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    return linear(np.maximum(linear(x, **c_fc), 0), **c_proj)", "ReLU"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    h = linear(x, **c_fc)\n"
                     "    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))\n"
                     "    y = linear(h, **c_proj)\n"
                     "    return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))",
     "GELU after the second projection too"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    y = linear(linear(x, **c_fc), **c_proj)\n"
                     "    return 0.5 * y * (1 + np.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y ** 3)))",
     "GELU after the second projection instead"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    h = x @ c_fc['w'].T\n"
                     "    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))\n"
                     "    return h @ c_proj['w'].T", "leaves out the biases"),
    ("block", "def block(x, ln_1, attn, ln_2, mlp, at):\n"
              "    x = layer_norm(x + self_attention(x, **attn, at=at), **ln_1, eps=at.eps)\n"
              "    return layer_norm(x + feed_forward(x, **mlp), **ln_2, eps=at.eps)", "post-norm"),
    ("block", "def block(x, ln_1, attn, ln_2, mlp, at):\n"
              "    x = self_attention(layer_norm(x, **ln_1, eps=at.eps), **attn, at=at)\n"
              "    return feed_forward(layer_norm(x, **ln_2, eps=at.eps), **mlp)", "residual connections"),
    ("GlobalCache", "class GlobalCache:\n    def update(self, k, v):\n        return k, v, np.arange(k.shape[2])", "newest key's index"),
    ("GlobalCache", "class GlobalCache:\n    n = 0\n    def update(self, k, v):\n        self.n += k.shape[2]\n"
                    "        return k, v, np.arange(self.n - k.shape[2], self.n)", "forgets the earlier keys"),
    ("LocalCache", "class LocalCache:\n    def __init__(self, window):\n        self.window, self.k, self.v = window, None, None\n"
                   "    def update(self, k, v):\n        self.k = k if self.k is None else np.concatenate([self.k, k], 2)\n"
                   "        self.v = v if self.v is None else np.concatenate([self.v, v], 2)\n"
                   "        return self.k, self.v, np.arange(self.k.shape[2])", "grows the memory"),
    ("LocalCache", "class LocalCache:\n    def __init__(self, window):\n        self.window, self.n = window, 0\n"
                   "        self.k = self.v = None\n    def update(self, k, v):\n"
                   "        keys = k if self.k is None else np.concatenate([self.k, k], 2)\n"
                   "        values = v if self.v is None else np.concatenate([self.v, v], 2)\n        self.n += k.shape[2]\n"
                   "        keep = max(self.window - 2, 0)\n"
                   "        self.k, self.v = keys[:, :, keys.shape[2] - keep:], values[:, :, values.shape[2] - keep:]\n"
                   "        return keys, values, np.arange(self.n - keys.shape[2], self.n)", "window - 1 back"),
    ("apply_temperature", "def apply_temperature(logits, temperature):\n    return logits * temperature", "multiplies"),
    ("apply_temperature", "def apply_temperature(logits, temperature):\n    logits /= temperature\n    return logits",
     "in place"),
    ("top_k_filter", "def top_k_filter(logits, k):\n    if k == 0:\n        return logits\n"
                     "    keep = np.argsort(-logits, axis=-1)[:, :k]\n    out = np.full_like(logits, -np.inf)\n"
                     "    np.put_along_axis(out, keep, np.take_along_axis(logits, keep, -1), -1)\n    return out", "ties"),
    ("top_k_filter", "def top_k_filter(logits, k):\n    if k == 0:\n        return logits\n"
                     "    kth = np.sort(logits, axis=-1)[:, min(k, logits.shape[-1]) - 1][:, None]\n"
                     "    return np.where(logits <= kth, logits, -np.inf)", "k smallest"),
    # top-k keeping k + 1 by sorting crashes on the edge case k > vocabulary: diagnosed on the ordinary ones
    ("top_k_filter", "def top_k_filter(logits, k):\n    if k == 0:\n        return logits\n"
                     "    kth = np.sort(logits, axis=-1)[:, -(k + 1)][:, None]\n"
                     "    return np.where(logits >= kth, logits, -np.inf)", "keeps k + 1 tokens"),
    ("top_p_filter", "def top_p_filter(logits, top_p):\n    p = softmax(logits)\n    order = np.argsort(-p, axis=-1)\n"
                     "    c = np.cumsum(np.take_along_axis(p, order, -1), -1)\n    keep = c < top_p\n    keep[:, 0] = True\n"
                     "    out = np.full_like(logits, -np.inf)\n    for row in range(len(logits)):\n"
                     "        out[row, order[row][keep[row]]] = logits[row, order[row][keep[row]]]\n    return out",
     "drops the token that carries the cumulative probability past top_p"),
    ("top_p_filter", "def top_p_filter(logits, top_p):\n    order = np.argsort(-logits, axis=-1)\n"
                     "    c = np.cumsum(np.take_along_axis(softmax(logits), order, -1), -1)\n    keep = np.zeros(logits.shape, bool)\n"
                     "    np.put_along_axis(keep, order, c <= top_p, -1)\n    return np.where(keep, logits, -np.inf)",
     "can drop every token"),
    ("top_p_filter", "def top_p_filter(logits, top_p):\n    order = np.argsort(-logits, axis=-1)\n"
                     "    c = np.cumsum(np.take_along_axis(softmax(logits), order, -1), -1)\n    c[:, 0] = 0\n"
                     "    keep = np.zeros(logits.shape, bool)\n    np.put_along_axis(keep, order, c < top_p, -1)\n"
                     "    return np.where(keep, logits, -np.inf)", "crosses top_p"),
    ("ablate_heads", "def ablate_heads(heads, how='zero', cache=None):\n    hooks = []\n    for layer, head in heads:\n"
                     "        def hook(out, hook, head=head):\n            out = out.copy()\n"
                     "            out[..., head * 4:(head + 1) * 4] = 0\n            return out\n"
                     "        hooks.append((f'blocks.{layer}.hook_attn_out', hook))\n    return hooks", "after out_proj"),
    ("ablate_heads", "def ablate_heads(heads, how='zero', cache=None):\n    def make(layer, head):\n"
                     "        def hook(z, hook):\n            z = z.copy()\n            z[:, head] = 0\n            return z\n"
                     "        return (f'blocks.{layer}.attn.hook_z', make_hook := hook)\n"
                     "    return [make(layer, head) for layer, head in heads]", "knocks out a position of every head"),
    ("ablate_heads", "def ablate_heads(heads, how='zero', cache=None):\n    chosen = dict(heads)\n    hooks = []\n"
                     "    for layer, head in chosen.items():\n        def hook(z, hook, head=head, layer=layer):\n"
                     "            z = z.copy()\n            z[..., head, :] = 0 if how == 'zero' else "
                     "cache['z', layer][..., head, :].reshape(-1, z.shape[-1]).mean(0)\n            return z\n"
                     "        hooks.append((f'blocks.{layer}.attn.hook_z', hook))\n    return hooks", "only the last is ablated"),
    ("logit_lens", "def logit_lens(model, cache):\n    L = model.config.num_layers\n"
                   "    stack = np.stack([cache['resid_pre', i] for i in range(L)] + [cache['resid_post', L - 1]])\n"
                   "    return stack @ model.params['wte'].T", "leaves out ln_final"),
    ("logit_lens", "def logit_lens(model, cache):\n    rows = [cache['resid_post', i] for i in range(model.config.num_layers)]\n"
                   "    return np.stack([model.logits(layer_norm(r, **model.params['ln_f'])) for r in rows])",
     "resid_post) only"),
    ("patch_resid_pre", "def patch_resid_pre(model, clean_ids, corrupted_ids, metric):\n    _, clean = model.run_with_cache(clean_ids)\n"
                        "    L, T = model.config.num_layers, len(clean_ids)\n    grid = np.zeros((L, T))\n"
                        "    for l in range(L):\n        for t in range(T):\n            def put(act, hook):\n"
                        "                act = act.copy()\n                act[t:] = clean['resid_pre', l][t:]\n                return act\n"
                        "            grid[l, t] = metric(model.run_with_hooks(corrupted_ids, fwd_hooks=[(f'blocks.{l}.hook_resid_pre', put)]))\n"
                        "    return grid", "every position from t on"),
    ("patch_resid_pre", "def patch_resid_pre(model, clean_ids, corrupted_ids, metric):\n    _, clean = model.run_with_cache(clean_ids)\n"
                        "    L, T = model.config.num_layers, len(clean_ids)\n    grid = np.zeros((L, T))\n"
                        "    for l in range(L):\n        for t in range(T):\n            def put(act, hook):\n"
                        "                act = act.copy()\n                act[:, t] = clean['resid_pre', l][:, t]\n                return act\n"
                        "            grid[l, t] = metric(model.run_with_hooks(corrupted_ids, fwd_hooks=[(f'blocks.{l}.hook_resid_pre', put)]))\n"
                        "    return grid", "feature t of every position"),
    ("patch_resid_pre", "def patch_resid_pre(model, clean_ids, corrupted_ids, metric):\n    _, corrupted = model.run_with_cache(corrupted_ids)\n"
                        "    L, T = model.config.num_layers, len(clean_ids)\n    grid = np.zeros((L, T))\n"
                        "    for l in range(L):\n        for t in range(T):\n            def put(act, hook):\n"
                        "                act = act.copy()\n                act[t] = corrupted['resid_pre', l][t]\n                return act\n"
                        "            grid[l, t] = metric(model.run_with_hooks(clean_ids, fwd_hooks=[(f'blocks.{l}.hook_resid_pre', put)]))\n"
                        "    return grid", "wrong way round"),
]


def test_the_top_k_crash_is_shown_after_the_diagnosis(tmp_path):
    source = next(src for name, src, named in PLANTED if named == "keeps k + 1 tokens")
    fn, path = student(source, "top_k_filter", tmp_path)
    report = "\n".join(check(EXERCISES["top_k_filter"], fn, path).lines)
    assert "IndexError" in report and "k 20 > vocabulary 12" in report
    assert report.index("diagnosis: your top_k_filter keeps k + 1 tokens") < report.index("IndexError")


def test_every_exercise_has_two_planted_mistakes():
    counts = {name: sum(1 for n, _, _ in PLANTED if n == name) for name in EXERCISES}
    assert all(c >= 2 for c in counts.values()), counts


@pytest.mark.parametrize("name, source, named", PLANTED, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(PLANTED)])
def test_a_planted_mistake_fails_with_its_name(name, source, named, tmp_path):
    fn, path = student(source, name, tmp_path)
    result = check(EXERCISES[name], fn, path)
    report = "\n".join(result.lines)
    print(report)
    assert result.status == "mismatch" and named in report
    assert "expected" in report and "seen" in report


# ---- the command line: exit codes, and the student's own lines -------------------------------------------

def write(path, body):
    path.write_text(textwrap.dedent(body))
    return path


def test_unknown_exercise_lists_them_with_a_did_you_mean(tmp_path):
    done = cli("layernorm", write(tmp_path / "a.py", "def layer_norm(x, g, b, eps=1e-5):\n    return x\n"))
    assert done.returncode == 2 and "did you mean layer_norm?" in done.stderr and "top_p_filter" in done.stderr
    assert "Traceback" not in done.stderr


def test_usage_mistakes_exit_2_with_the_students_line(tmp_path):
    missing = cli("layer_norm", tmp_path / "nowhere.py")
    assert missing.returncode == 2 and "no such file" in missing.stderr
    no_function = cli("layer_norm", write(tmp_path / "b.py", "def layer_nrom(x, g, b, eps=1e-5):\n    return x\n"))
    assert no_function.returncode == 2 and "has no function 'layer_norm' (did you mean layer_nrom?)" in no_function.stderr
    syntax = cli("layer_norm", write(tmp_path / "c.py", "import numpy as np\n\ndef layer_norm(x, g, b, eps=1e-5)\n    return x\n"))
    assert syntax.returncode == 2 and "c.py, line 3: SyntaxError" in syntax.stderr and "def layer_norm(x, g, b, eps=1e-5)" in syntax.stderr
    imports = cli("layer_norm", write(tmp_path / "d.py", "import numpy as np\nimport torchh\n"))
    assert imports.returncode == 2 and "d.py, line 2: import torchh" in imports.stderr and "ModuleNotFoundError" in imports.stderr
    for done in (missing, no_function, syntax, imports):
        assert "Traceback" not in done.stderr and done.stderr.startswith("minineo: error: ")


def test_an_error_inside_the_function_is_their_line_and_exit_1(tmp_path):
    done = cli("layer_norm", write(tmp_path / "e.py", """\
        import numpy as np

        def layer_norm(x, g, b, eps=1e-5):
            mean = x.mean(-1)
            return g * (x - mean) / np.sqrt(x.var(-1) + eps) + b
        """))
    assert done.returncode == 1 and "ValueError: operands could not be broadcast" in done.stdout
    assert "e.py, line 5, in layer_norm: return g * (x - mean)" in done.stdout and "Traceback" not in done.stdout + done.stderr


LAYER_NORM_MISTAKES = {   # each way of getting layer_norm wrong the issue names -> words its diagnosis must contain
    "biased vs unbiased": ("var = x.var(-1, ddof=1, keepdims=True)\n    y = (x - x.mean(-1, keepdims=True)) / np.sqrt(var + eps)",
                           "unbiased variance"),
    "eps outside the sqrt": ("y = (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps)",
                             "epsilon outside the square root"),
    "in place": ("x -= x.mean(-1, keepdims=True)\n    y = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)",
                 "changed the caller's `x` in place"),
    "wrong dtype": ("y = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + np.float64(eps))",
                    "dtype differs: expected float32, seen float64"),
    "wrong shape": ("y = ((x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps))[..., None]",
                    "wrong shape"),
}


def test_a_student_sets_up_gets_layer_norm_wrong_then_right(tmp_path):
    setup = subprocess.run([sys.executable, "-m", "minineo.course", "setup", tmp_path / "class"], capture_output=True,
                           text=True, env=ENV, timeout=120)
    assert setup.returncode == 0, setup.stderr
    mine = tmp_path / "class" / "neo_exercises.py"
    assert sorted(p.name for p in mine.parent.iterdir()) == sorted(
        ["neo_exercises.py"] + [p.name for p in (ROOT / "notebooks" / "exercises").glob("*.ipynb")])
    stub = cli("layer_norm", mine)
    assert stub.returncode == 1 and "not written yet" in stub.stdout
    again = subprocess.run([sys.executable, "-m", "minineo.course", "setup", tmp_path / "class"], capture_output=True,
                           text=True, env=ENV, timeout=120)
    assert again.returncode == 1 and "already holds neo_exercises.py" in again.stderr   # nobody's work overwritten

    stub_text = mine.read_text()
    start = stub_text.index("def layer_norm")
    end = stub_text.index("raise NotImplementedError", start) + len("raise NotImplementedError")
    for mistake, (body, named) in LAYER_NORM_MISTAKES.items():
        mine.write_text(stub_text[:start] + f"def layer_norm(x, g, b, eps=1e-5):\n    {body}\n    return g * y + b"
                        + stub_text[end:])
        done = cli("layer_norm", mine)
        assert done.returncode == 1 and named in done.stdout, mistake
    mine.write_text(stub_text[:start] + "def layer_norm(x, g, b, eps=1e-5):\n    centred = x - x.mean(-1, keepdims=True)\n"
                    "    return g * centred / np.sqrt((centred ** 2).mean(-1, keepdims=True) + eps) + b" + stub_text[end:])
    fixed = cli("layer_norm", mine)
    assert fixed.returncode == 0 and "layer_norm: OK" in fixed.stdout


def test_in_model_moves_the_loss_for_a_wrong_function_only(tmp_path):
    from minineo.course.in_model import in_model
    exercise = EXERCISES["layer_norm"]
    same = "\n".join(in_model(exercise, OTHER_LAYER_NORM))
    assert "changes the held-out loss by +0.0000 nats per token (the same loss)" in same and "the same loss and text" in same
    wrong = EXERCISES["layer_norm"].mistakes[1].fn   # epsilon outside the square root
    moved = "\n".join(in_model(exercise, wrong))
    print(same, moved, sep="\n")
    change = float(moved.split("changes the held-out loss by ")[1].split()[0])
    assert abs(change) >= 1e-3
    nan = "\n".join(in_model(exercise, lambda x, g, b, eps=1e-5: g * (x - x.mean(-1, keepdims=True)) /
                             np.sqrt(x.var(-1, keepdims=True) - 1) + b))
    assert "the model computed NaN or inf with your function" in nan


def OTHER_LAYER_NORM(x, g, b, eps=1e-5):   # correct, written differently
    x64 = x.astype(np.float64)
    return (g * (x64 - x64.mean(-1, keepdims=True)) / np.sqrt(x64.var(-1, keepdims=True) + eps) + b).astype(np.float32)


def test_the_in_model_flag_prints_both_losses(tmp_path):
    done = cli("gelu_new", OTHER_SOLUTIONS, "--in-model")
    assert done.returncode == 0 and "reference" in done.stdout and "yours" in done.stdout and "(the same loss)" in done.stdout
    assert "the same loss and text: inside the model, your function computes what GPT-Neo's does" in done.stdout
    assert "lower is better" not in done.stdout


def test_a_lower_loss_from_a_known_mistake_is_called_a_changed_model(tmp_path):
    # the unbiased variance lowers the held-out loss of the bundled model (5.2421 against 5.2455)
    done = cli("layer_norm", write(tmp_path / "unbiased.py", """\
        import numpy as np

        def layer_norm(x, g, b, eps=1e-5):
            m = x.mean(-1, keepdims=True)
            return g * (x - m) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) + b
        """), "--in-model")
    out = done.stdout
    assert done.returncode == 1 and "changes the held-out loss by -0." in out and "lower is better" not in out
    assert "a different loss, lower or higher, is a different model" in out
    assert "not a better model; the unit check named the mistake that does it: your layer_norm uses the unbiased" in out
    assert out.count("uses the unbiased variance") == 2   # once in the diagnosis, once where it says what lowers the loss


def test_check_all_with_in_model_runs_each_passing_exercise(tmp_path):
    path = write(tmp_path / "two.py", """\
        import math
        import numpy as np

        def layer_norm(x, g, b, eps=1e-5):
            return g * (x - x.mean(-1, keepdims=True)) / (x.std(-1, keepdims=True) + eps) + b

        def gelu_new(x):
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
        """)
    done = cli("all", path, "--in-model")
    out = done.stdout
    assert done.returncode == 1 and "gelu_new in the bundled model" in out and "layer_norm in the bundled model" not in out
    assert "not put in the model: the 16 exercises that are missing or do not pass their unit checks" in out


def test_in_model_isolates_the_students_exit(tmp_path):
    from minineo.course.in_model import in_model

    def leaves(x, g, b, eps=1e-5):
        raise SystemExit(3)
    lines = in_model(EXERCISES["layer_norm"], leaves)
    assert lines[0].startswith("layer_norm in the model: it raised SystemExit(3): your code called sys.exit(3)"), lines


def test_no_diagnosis_repeats_what_the_report_already_says(tmp_path):
    import difflib
    for name, source, _ in PLANTED:
        fn, path = student(source, name, tmp_path)
        lines = check(EXERCISES[name], fn, path).lines
        for i, line in enumerate(lines):
            for other in lines[i + 1:]:
                match = difflib.SequenceMatcher(None, line, other, autojunk=False).find_longest_match()
                assert match.size < 40, f"{name}: said twice: {line[match.a:match.a + match.size]!r}\n" + "\n".join(lines)


# ---- the exercise notebooks --------------------------------------------------------------------------------

def test_exercise_notebooks_hold_the_stub_files_stubs():
    from conftest import load_script
    made = load_script("make_exercise_notebooks").notebooks()
    folder = ROOT / "notebooks" / "exercises"
    assert sorted(made) == sorted(p.name for p in folder.glob("*.ipynb"))
    for name, text in made.items():
        assert (folder / name).read_text(encoding="utf-8") == text, \
            f"{name} is out of date with minineo/course/neo_exercises.py: run python scripts/make_exercise_notebooks.py"
    code = "".join(text for text in made.values())
    for exercise in EXERCISES:
        assert f'check(\\"{exercise}\\", {exercise})' in code, f"no check cell for {exercise}"


@pytest.mark.parametrize("name", EXERCISES)
def test_the_stubs_have_the_references_signatures(name):
    import inspect
    from minineo.course import neo_exercises
    stub, reference = getattr(neo_exercises, name), EXERCISES[name].reference
    if inspect.isclass(reference):
        stub, reference = stub.update, reference.update
    # the same parameters, kinds and defaults, but for the reference's `hook` (the model's hook points,
    # minineo/model/hooks.py) and feed_forward's `gelu` (minineo.fast's faster one), which the exercises
    # leave out and the model passes only when set: the course's plain model never sets gelu
    ours, theirs = inspect.signature(stub).parameters, inspect.signature(reference).parameters
    theirs = {n: p for n, p in theirs.items() if n not in ("hook", "gelu")}
    assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()]
    assert all(ours[n].default == theirs[n].default for n in ours)
    assert check(EXERCISES[name], getattr(neo_exercises, name)).status == "not written"


# ---- a verdict only the checker gives (issue 33, item 7) -----------------------------------------------------

STOPPERS = {   # a layer_norm body that stops or fools the process -> words the report must contain
    "sys.exit(0)": ("import sys\n    sys.exit(0)", "SystemExit(0): your code called sys.exit(0) or exit()"),
    "exit()": ("exit()", "SystemExit(None): your code called sys.exit() or exit()"),
    "os._exit(0)": ("import os\n    os._exit(0)", "ended the process (os._exit(0) or the like) before returning"),
    "escaping BaseException": ("raise KeyboardInterrupt('stop')", "KeyboardInterrupt: stop"),
}


@pytest.mark.parametrize("how", STOPPERS)
def test_a_function_that_ends_the_process_fails_by_name(how, tmp_path):
    body, named = STOPPERS[how]
    done = cli("layer_norm", write(tmp_path / "stop.py", f"def layer_norm(x, g, b, eps=1e-5):\n    {body}\n"))
    assert done.returncode == 1 and named in done.stdout, how
    assert "Traceback" not in done.stdout + done.stderr


def test_a_function_that_exits_on_one_case_only_fails(tmp_path):
    # every case but the last matches, then os._exit(0): a grading script must not read that as a pass
    done = cli("layer_norm", write(tmp_path / "late.py", """\
        import os
        import numpy as np

        def layer_norm(x, g, b, eps=1e-5):
            if x.mean() > 100:
                os._exit(0)
            m = x.mean(-1, keepdims=True)
            return g * (x - m) / np.sqrt(x.var(-1, keepdims=True) + eps) + b
        """))
    assert done.returncode == 1 and "FAILED on case 5, large values" in done.stdout and "os._exit(0)" in done.stdout


def test_a_function_that_never_returns_is_stopped_at_the_limit(tmp_path, monkeypatch):
    from minineo.course import isolated
    assert isolated.LIMIT == 10   # the limit docs/teaching.md states
    monkeypatch.setattr(isolated, "LIMIT", 1.5)
    fn, path = student("def layer_norm(x, g, b, eps=1e-5):\n    while True:\n        pass\n", "layer_norm", tmp_path)
    result = check(EXERCISES["layer_norm"], fn, path)
    assert result.status == "error" and "did not return within 1.5 s (the checker's limit per case)" in result.lines[1]


def test_a_memory_blow_up_is_one_line(tmp_path):
    fn, path = student("def layer_norm(x, g, b, eps=1e-5):\n    grow = []\n    while True:\n"
                       "        grow.append(np.zeros(1 << 24))\n", "layer_norm", tmp_path)
    result = check(EXERCISES["layer_norm"], fn, path)
    print("\n".join(result.lines))
    assert result.status == "error" and result.lines[1].startswith("  MemoryError: your function asked for more memory")
    assert len(result.lines) == 3 and ", in layer_norm: grow.append(np.zeros(1 << 24))" in result.lines[2]


# ---- composite exercises: the student's own helper named (issue 33, item 4) ----------------------------------

OWN = {   # helpers as a student writes them, right and wrong
    "causal_mask off by one": "def causal_mask(q_idx, k_idx, window=None):\n    o = q_idx[:, None] - k_idx[None, :]\n"
                              "    return (o >= 0) & (o <= window) if window else o >= 0\n",
    "causal_mask": "def causal_mask(q_idx, k_idx, window=None):\n    o = q_idx[:, None] - k_idx[None, :]\n"
                   "    return (o >= 0) & (o < window) if window else o >= 0\n",
    "layer_norm unbiased": "def layer_norm(x, g, b, eps=1e-5):\n    m = x.mean(-1, keepdims=True)\n"
                           "    return g * (x - m) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) + b\n",
    "layer_norm": "def layer_norm(x, g, b, eps=1e-5):\n    m = x.mean(-1, keepdims=True)\n"
                  "    return g * (x - m) / np.sqrt(x.var(-1, keepdims=True) + eps) + b\n",
    "layer_norm stub": "def layer_norm(x, g, b, eps=1e-5):\n    raise NotImplementedError\n",
    "softmax stub": "def softmax(x):\n    raise NotImplementedError\n",
    "gelu_new x^2": "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 2)))\n",
    "self_attention": "def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):\n"
                      "    q, k, v = (split_heads(linear(x, **p), at.n_head) for p in (q_proj, k_proj, v_proj))\n"
                      "    k_idx = at.q_idx\n    if at.cache is not None:\n        k, v, k_idx = at.cache.update(k, v)\n"
                      "    mask = causal_mask(at.q_idx, k_idx, at.window) & at.real[:, None, None, k_idx]\n"
                      "    return linear(merge_heads(attention(q, k, v, mask)), **out_proj)\n",
    "self_attention scaled": "def self_attention(x, q_proj, k_proj, v_proj, out_proj, at):\n"
                             "    q, k, v = (split_heads(linear(x, **p), at.n_head) for p in (q_proj, k_proj, v_proj))\n"
                             "    k_idx = at.q_idx\n    if at.cache is not None:\n        k, v, k_idx = at.cache.update(k, v)\n"
                             "    mask = causal_mask(at.q_idx, k_idx, at.window) & at.real[:, None, None, k_idx]\n"
                             "    return linear(merge_heads(attention(q / math.sqrt(q.shape[-1]), k, v, mask)), **out_proj)\n",
    "feed_forward": "def feed_forward(x, c_fc, c_proj):\n    return linear(gelu_new(linear(x, **c_fc)), **c_proj)\n",
    "block": "def block(x, ln_1, attn, ln_2, mlp, at):\n"
             "    x = x + self_attention(layer_norm(x, **ln_1, eps=at.eps), **attn, at=at)\n"
             "    return x + feed_forward(layer_norm(x, **ln_2, eps=at.eps), **mlp)\n",
    "block post-norm": "def block(x, ln_1, attn, ln_2, mlp, at):\n"
                       "    x = layer_norm(x + self_attention(x, **attn, at=at), **ln_1, eps=at.eps)\n"
                       "    return layer_norm(x + feed_forward(x, **mlp), **ln_2, eps=at.eps)\n",
}

COMPOSITE = [   # (exercise, the student's functions, words the diagnosis must contain)
    ("self_attention", ["causal_mask off by one", "self_attention"],
     ["your causal_mask (checked: has the window off by one", "makes self_attention differ",
      "With minineo's causal_mask in place of yours, your self_attention matches"]),
    ("block", ["layer_norm unbiased", "self_attention", "causal_mask", "feed_forward", "block"],
     ["your layer_norm (checked: uses the unbiased variance", "makes block differ"]),
    # a helper that fails only through another helper is not blamed: the one underneath is
    ("block", ["layer_norm", "causal_mask off by one", "self_attention", "feed_forward", "block"],
     ["your causal_mask (checked: has the window off by one", "makes block differ"]),
    ("block", ["layer_norm", "causal_mask", "self_attention scaled", "feed_forward", "block"],
     ["your self_attention (checked: the fault is in self_attention itself", "1/sqrt(head size)", "makes block differ"]),
    ("feed_forward", ["gelu_new x^2", "feed_forward"], ["your gelu_new (checked: has x^2 where the formula has x^3",
                                                            "makes feed_forward differ"]),
    # the student's helpers are right: the fault is the composite's own, and its mistake is named
    ("block", ["layer_norm", "causal_mask", "self_attention", "feed_forward", "block post-norm"],
     ["the fault is in block itself: with minineo's own layer_norm, self_attention, causal_mask, feed_forward",
      "normalises after adding (post-norm"]),
    # a stub the student's code never calls (their softmax: they use minineo's attention) is not blamed
    ("block", ["softmax stub", "layer_norm", "causal_mask", "self_attention", "feed_forward", "block post-norm"],
     ["the fault is in block itself", "normalises after adding (post-norm"]),
]


@pytest.mark.parametrize("name, parts, named", COMPOSITE, ids=[f"{c[0]}-{i}" for i, c in enumerate(COMPOSITE)])
def test_a_composite_names_the_students_own_helper(name, parts, named, tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import math\nimport numpy as np\nfrom minineo.model.attention import split_heads, merge_heads, "
                    "attention, softmax\nfrom minineo.model.linear import linear\nfrom minineo.model.mlp import gelu_new\n\n"
                    + "\n".join(OWN[p] for p in parts))
    done = cli(name, path)
    diagnosis = next(line for line in done.stdout.splitlines() if "diagnosis:" in line)
    assert done.returncode == 1 and all(words in diagnosis for words in named), diagnosis
    assert "your self_attention (checked" not in diagnosis or "self_attention scaled" in parts
    assert "also fail" not in diagnosis


def test_a_composite_on_an_unwritten_helper_says_which(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import numpy as np\nfrom minineo.model.attention import self_attention\n"
                    "from minineo.model.mlp import feed_forward\n\n" + OWN["layer_norm stub"] + OWN["block"])
    done = cli("block", path)
    assert done.returncode == 1 and "block: not written yet, or a function it calls is not: layer_norm raises " \
                                    "NotImplementedError" in done.stdout and "write layer_norm first" in done.stdout


# ---- the notebooks' flow: a later notebook calls the student's earlier functions (issue 33, item 6) ------------

def test_notebook_4_checks_block_on_the_students_own_layer_norm(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    setup = subprocess.run([sys.executable, "-m", "minineo.course", "setup", tmp_path], capture_output=True, text=True,
                           env=ENV, timeout=120)
    assert setup.returncode == 0, setup.stderr
    stubs = (tmp_path / "neo_exercises.py").read_text()
    start = stubs.index("def layer_norm")
    end = stubs.index("raise NotImplementedError", start) + len("raise NotImplementedError")
    (tmp_path / "neo_exercises.py").write_text(stubs[:start] + OWN["layer_norm unbiased"].rstrip() + stubs[end:])
    nb = nbformat.read(tmp_path / "4_mlp_and_block.ipynb", as_version=4)
    for c in nb.cells:   # the student writes block in the notebook, calling layer_norm and self_attention
        if c.cell_type == "code" and c.source.startswith("def block("):
            c.source = OWN["block"].replace("feed_forward(", "minineo_ff(") + \
                "\nfrom minineo.model.mlp import feed_forward as minineo_ff"
    assert any("earlier(" in c.source for c in nb.cells) and \
        any("**Where you write:**" in c.source for c in nb.cells if c.cell_type == "markdown")
    with mock.patch.dict(os.environ, {"PYTHONPATH": ENV["PYTHONPATH"]}):
        nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                resources={"metadata": {"path": str(tmp_path)}}).execute()
    said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    print(said)
    assert "layer_norm: yours, from neo_exercises.py (it does not pass its check yet" in said
    assert "self_attention: minineo's own (yours in neo_exercises.py: not written yet)" in said
    assert "your layer_norm (checked: uses the unbiased variance" in said and "makes block differ" in said


def test_every_exercise_notebook_says_where_to_write():
    from conftest import load_script
    made = load_script("make_exercise_notebooks")
    for lesson in made.LESSONS:
        nb = made.notebook(lesson, made.stub_sources())
        assert "**Where you write:**" in nb["cells"][0]["source"], lesson["file"]
        used = {n for name in lesson["exercises"] for n in EXERCISES[name].uses} - set(lesson["exercises"])
        assert used <= set(lesson.get("needs", ())), f"{lesson['file']}: calls {used} from earlier lessons"


def test_a_lens_on_the_students_own_layer_norm_names_it(tmp_path):
    path = write(tmp_path / "lens.py", """\
        import numpy as np

        def layer_norm(x, g, b, eps=1e-5):
            return g * (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, ddof=1, keepdims=True) + eps) + b

        def logit_lens(model, cache):
            L = model.config.num_layers
            stack = np.stack([cache["resid_pre", i] for i in range(L)] + [cache["resid_post", L - 1]])
            return model.logits(layer_norm(stack, **model.params["ln_f"], eps=model.config.layer_norm_epsilon))
        """)
    done = cli("logit_lens", path)
    assert done.returncode == 1 and "your layer_norm (checked: uses the unbiased variance" in done.stdout \
        and "makes logit_lens differ" in done.stdout
