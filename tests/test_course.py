"""The course kit: every exercise passes on minineo's own function and on correct solutions written
differently, and fails on mistakes as a student writes them, with the mistake named."""
import os
import subprocess
import sys
import textwrap
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
    ("feed_forward", "def feed_forward(x, c_fc, c_proj):\n    return linear(np.maximum(linear(x, **c_fc), 0), **c_proj)", "ReLU"),
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
    assert "changes the held-out loss by +0.0000 nats per token (the same loss)" in same
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
    # minineo/model/hooks.py), which the exercises leave out and the model drops for a student's function
    ours, theirs = inspect.signature(stub).parameters, inspect.signature(reference).parameters
    theirs = {n: p for n, p in theirs.items() if n != "hook"}
    assert [(p.name, p.kind) for p in ours.values()] == [(p.name, p.kind) for p in theirs.values()]
    assert all(ours[n].default == theirs[n].default for n in ours)
    assert check(EXERCISES[name], getattr(neo_exercises, name)).status == "not written"
