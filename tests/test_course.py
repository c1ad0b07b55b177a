"""The course kit: every exercise passes on minineo's own function and on correct solutions written
differently, and fails on mistakes as a student writes them, with the mistake named."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from minineo.course import exercises as course
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
    ("self_attention", "def self_attention(x, q_proj, k_proj, v_proj, out_proj, *, n_head, window, q_idx, real, cache=None):\n"
                       "    q, k, v = (split_heads(linear(x, **p), n_head) for p in (q_proj, k_proj, v_proj))\n"
                       "    k_idx = q_idx\n    if cache is not None:\n        k, v, k_idx = cache.update(k, v)\n"
                       "    mask = causal_mask(q_idx, k_idx, window) & real[:, None, None, k_idx]\n"
                       "    return linear(merge_heads(attention(q / math.sqrt(q.shape[-1]), k, v, mask)), **out_proj)",
     "1/sqrt(head size)"),
    ("self_attention", "def self_attention(x, q_proj, k_proj, v_proj, out_proj, *, n_head, window, q_idx, real, cache=None):\n"
                       "    q, k, v = (split_heads(linear(x, **p), n_head) for p in (q_proj, k_proj, v_proj))\n"
                       "    k_idx = q_idx\n    if cache is not None:\n        k, v, k_idx = cache.update(k, v)\n"
                       "    return linear(merge_heads(attention(q, k, v, causal_mask(q_idx, k_idx, window))), **out_proj)",
     "ignores the padding"),
    ("gelu_new", "def gelu_new(x):\n    return np.array([0.5 * a * (1 + math.erf(a / math.sqrt(2))) for a in x.ravel()],"
                 " np.float32).reshape(x.shape)", "exact GELU"),
    ("gelu_new", "def gelu_new(x):\n    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 2)))", "x^2"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    return linear(np.maximum(linear(x, **c_fc), 0), **c_proj)", "ReLU"),
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    h = x @ c_fc['w'].T\n"
                     "    h = 0.5 * h * (1 + np.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))\n"
                     "    return h @ c_proj['w'].T", "leaves out the biases"),
    ("block", "def block(x, ln_1, attn, ln_2, mlp, *, n_head, eps, window, q_idx, real, cache=None):\n"
              "    x = layer_norm(x + self_attention(x, **attn, n_head=n_head, window=window, q_idx=q_idx, real=real,"
              " cache=cache), **ln_1, eps=eps)\n    return layer_norm(x + feed_forward(x, **mlp), **ln_2, eps=eps)", "post-norm"),
    ("block", "def block(x, ln_1, attn, ln_2, mlp, *, n_head, eps, window, q_idx, real, cache=None):\n"
              "    x = self_attention(layer_norm(x, **ln_1, eps=eps), **attn, n_head=n_head, window=window, q_idx=q_idx,"
              " real=real, cache=cache)\n    return feed_forward(layer_norm(x, **ln_2, eps=eps), **mlp)", "residual connections"),
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
    ("top_p_filter", "def top_p_filter(logits, top_p):\n    order = np.argsort(-logits, axis=-1)\n"
                     "    c = np.cumsum(np.take_along_axis(softmax(logits), order, -1), -1)\n    keep = np.zeros(logits.shape, bool)\n"
                     "    np.put_along_axis(keep, order, c <= top_p, -1)\n    return np.where(keep, logits, -np.inf)",
     "can drop every token"),
    ("top_p_filter", "def top_p_filter(logits, top_p):\n    order = np.argsort(-logits, axis=-1)\n"
                     "    c = np.cumsum(np.take_along_axis(softmax(logits), order, -1), -1)\n    c[:, 0] = 0\n"
                     "    keep = np.zeros(logits.shape, bool)\n    np.put_along_axis(keep, order, c < top_p, -1)\n"
                     "    return np.where(keep, logits, -np.inf)", "crosses top_p"),
]


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
