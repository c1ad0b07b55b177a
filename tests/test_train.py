"""Training's backward pass: every layer's backward against finite differences in float64 (no torch
needed) and against torch's autograd, and loss_and_grads against transformers on random configs.
Each failure prints the largest difference, relative to the largest gradient of that tensor."""
import numpy as np
import pytest

import minineo
from conftest import hf_model, tiny_config
from minineo.model.attention import MASKED, attention, causal_mask, softmax
from minineo.model.block import Layer, block
from minineo.model.embedding import embed, lm_head
from minineo.model.layer_norm import layer_norm
from minineo.model.linear import linear
from minineo.model.mlp import feed_forward, gelu_new
from minineo.train import backward as bw
from minineo.train.grads import hub_named, loss_and_grads, loss_and_param_grads
from minineo.weights.random_checkpoint import write_random_checkpoint

B, T, D, H, INNER, V = 2, 5, 6, 2, 8, 7
MASKS = {"global": causal_mask(np.arange(T), np.arange(T)), "local 2": causal_mask(np.arange(T), np.arange(T), 2),
         "window 1": causal_mask(np.arange(T), np.arange(T), 1)}


def relative_error(ours, ref):
    ours, ref = np.asarray(ours, np.float64), np.asarray(ref, np.float64)
    assert ours.shape == ref.shape, f"shape {ours.shape} != {ref.shape}"
    return float(np.abs(ours - ref).max() / max(np.abs(ref).max(), 1e-30))


def assert_grads(ours, ref, what, tol):
    for name in ref:
        error = relative_error(ours[name], ref[name])
        print(f"{what} d_{name}: max abs difference {error:.3g} of the largest gradient")
        assert error <= tol, f"{what}: d_{name} differs by {error:.3g} of its largest value (> {tol:g})"


def mask_probs(q, k, mask):  # the attention probabilities attention() computes on its way
    return softmax(np.where(mask, q @ k.swapaxes(-1, -2), MASKED))


def mlp_backward(d_y, x, c_fc, c_proj):
    return bw.feed_forward_backward(d_y, x, linear(x, **c_fc), c_fc, c_proj)


def block_backward(d_y, x, layer, mask):
    _, saved = bw.block_forward(x, **layer, n_head=H, eps=1e-5, mask=mask)
    return bw.block_backward(d_y, saved, **layer, n_head=H, eps=1e-5)


def attention_layer(rng, scale=0.5):
    w = lambda *shape: scale * rng.standard_normal(shape)   # noqa: E731
    return {"q_proj": {"w": w(D, D)}, "k_proj": {"w": w(D, D)}, "v_proj": {"w": w(D, D)},
            "out_proj": {"w": w(D, D), "b": w(D)}}


def mlp_layer(rng):
    return {"c_fc": {"w": 0.5 * rng.standard_normal((INNER, D)), "b": rng.standard_normal(INNER)},
            "c_proj": {"w": 0.5 * rng.standard_normal((D, INNER)), "b": rng.standard_normal(D)}}


def block_layer(rng):
    norm = lambda: {"g": 1 + 0.3 * rng.standard_normal(D), "b": 0.3 * rng.standard_normal(D)}   # noqa: E731
    return {"ln_1": norm(), "attn": attention_layer(rng), "ln_2": norm(), "mlp": mlp_layer(rng)}


def cases(rng):
    """name -> (inputs, forward(**inputs) -> array, backward(d_y, **inputs) -> {input: gradient}).
    Integer inputs (ids, masks) are passed through; the gradients of every float input are checked."""
    x = rng.standard_normal((B, T, D))
    qkv = {name: rng.standard_normal((B, H, T, 3)) for name in "qkv"}
    ids = rng.integers(0, V, (B, T))
    ids[1, :2] = ids[0, 0]   # a token used three times: its row's gradient is a sum
    found = {
        "layer_norm": ({"x": x, "g": rng.standard_normal(D), "b": rng.standard_normal(D)}, layer_norm,
                       lambda d, x, g, b: dict(zip("xgb", bw.layer_norm_backward(d, x, g)))),
        "linear": ({"x": x, "w": rng.standard_normal((4, D)), "b": rng.standard_normal(4)}, linear,
                   lambda d, x, w, b: dict(zip("xwb", bw.linear_backward(d, x, w)))),
        "gelu_new": ({"x": 3 * x}, gelu_new, lambda d, x: {"x": bw.gelu_new_backward(d, x)}),
        "feed_forward": ({"x": x, **mlp_layer(rng)}, feed_forward, lambda d, x, c_fc, c_proj: dict(
            zip(("x", "params"), mlp_backward(d, x, c_fc, c_proj)))),
        "embed": ({"ids": ids, "positions": np.broadcast_to(np.arange(T), (B, T)),
                   "wte": rng.standard_normal((V, D)), "wpe": rng.standard_normal((T + 2, D))}, embed,
                  lambda d, ids, positions, wte, wpe: dict(zip(("wte", "wpe"),
                                                               bw.embed_backward(d, ids, positions, wte, wpe)))),
        "lm_head": ({"h": x, "wte": rng.standard_normal((V, D))}, lm_head,
                    lambda d, h, wte: dict(zip(("h", "wte"), bw.lm_head_backward(d, h, wte)))),
        "cross_entropy": ({"logits": 3 * rng.standard_normal((B * T, V)), "targets": ids.reshape(-1)},
                          lambda logits, targets: bw.cross_entropy(logits, targets)[0],
                          lambda d, logits, targets: {"logits": d[:, None] * bw.cross_entropy_backward(
                              bw.cross_entropy(logits, targets)[1], targets)}),
    }
    for mask_name, mask in MASKS.items():
        found[f"attention {mask_name}"] = (
            {**qkv, "mask": mask}, attention,
            lambda d, q, k, v, mask: dict(zip("qkv", bw.attention_backward(d, q, k, v, mask_probs(q, k, mask)))))
        found[f"self_attention {mask_name}"] = (
            {"x": x, **attention_layer(rng), "mask": mask},
            lambda x, mask, **p: bw.self_attention_forward(x, **p, n_head=H, mask=mask)[0],
            lambda d, x, mask, **p: dict(zip(("x", "params"), bw.self_attention_backward(
                d, x, bw.self_attention_forward(x, **p, n_head=H, mask=mask)[1], **p, n_head=H))))
        found[f"block {mask_name}"] = (
            {"x": x, "layer": block_layer(rng), "mask": mask},
            lambda x, layer, mask: bw.block_forward(x, **layer, n_head=H, eps=1e-5, mask=mask)[0],
            lambda d, x, layer, mask: dict(zip(("x", "layer"), block_backward(d, x, layer, mask))))
    return found


CASE_NAMES = list(cases(np.random.default_rng(0)))


def float_leaves(value, path=()):  # every float array in a nested input, with its path
    if isinstance(value, dict):
        for key, item in value.items():
            yield from float_leaves(item, path + (key,))
    elif isinstance(value, np.ndarray) and value.dtype.kind == "f":
        yield path, value


def pick(tree, path):
    for key in path:
        tree = tree[key]
    return tree


@pytest.mark.parametrize("name", CASE_NAMES)
def test_backward_equals_finite_differences(name):
    rng = np.random.default_rng(1)
    inputs, forward, backward = cases(rng)[name]
    d_y = rng.standard_normal(np.shape(forward(**inputs)))
    analytic = backward(d_y, **inputs)
    errors = {}
    for path, array in float_leaves(inputs):
        key = path[0] if path[0] in analytic else None
        grad = pick(analytic, (key,) + path[1:]) if key else pick(analytic["params"], path)
        numeric = np.empty_like(array)
        for i in np.ndindex(array.shape):   # central differences, every entry
            kept = array[i]
            array[i] = kept + 1e-6
            up = np.sum(forward(**inputs) * d_y)
            array[i] = kept - 1e-6
            down = np.sum(forward(**inputs) * d_y)
            array[i] = kept
            numeric[i] = (up - down) / 2e-6
        errors[".".join(map(str, path))] = relative_error(grad, numeric)
    print(f"{name}: max difference from finite differences, relative to the largest gradient: {errors}")
    assert max(errors.values()) < 1e-6, f"{name}: {errors}"


def torch_forward(name, torch):
    """Each layer written in torch from GPT-Neo's definition (docs/gpt-neo.md), for autograd to differentiate."""
    F = torch.nn.functional

    def masked_attention(q, k, v, mask):
        scores = (q @ k.transpose(-1, -2)).masked_fill(~torch.as_tensor(mask), torch.finfo(q.dtype).min)
        return scores.softmax(-1) @ v

    def self_attention(x, q_proj, k_proj, v_proj, out_proj, mask):
        heads = [F.linear(x, p["w"]).unflatten(-1, (H, -1)).transpose(1, 2) for p in (q_proj, k_proj, v_proj)]
        out = masked_attention(*heads, mask).transpose(1, 2).flatten(2)
        return F.linear(out, out_proj["w"], out_proj["b"])

    def mlp(x, c_fc, c_proj):
        return F.linear(F.gelu(F.linear(x, c_fc["w"], c_fc["b"]), approximate="tanh"), c_proj["w"], c_proj["b"])

    def norm(x, g, b):
        return F.layer_norm(x, x.shape[-1:], g, b, eps=1e-5)

    def block(x, layer, mask):
        x = x + self_attention(norm(x, **layer["ln_1"]), **layer["attn"], mask=mask)
        return x + mlp(norm(x, **layer["ln_2"]), **layer["mlp"])

    kind = name.split()[0]
    return {"layer_norm": norm, "linear": lambda x, w, b: F.linear(x, w, b), "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
            "feed_forward": mlp, "embed": lambda ids, positions, wte, wpe: wte[ids] + wpe[positions],
            "lm_head": lambda h, wte: h @ wte.T,
            "cross_entropy": lambda logits, targets: F.cross_entropy(logits, targets, reduction="none"),
            "attention": masked_attention, "self_attention": self_attention, "block": block}[kind]


def to_torch(value, torch):   # nested inputs -> the same nesting of float32 leaf tensors that require grad
    if isinstance(value, dict):
        return {key: to_torch(item, torch) for key, item in value.items()}
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return torch.tensor(value, requires_grad=True)
    return torch.as_tensor(np.ascontiguousarray(value))


def to_float32(value):
    if isinstance(value, dict):
        return {key: to_float32(item) for key, item in value.items()}
    return value.astype(np.float32) if isinstance(value, np.ndarray) and value.dtype == np.float64 else value


@pytest.mark.parametrize("name", CASE_NAMES)
def test_backward_equals_torch_autograd(name):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    inputs, forward, backward = cases(rng)[name]
    inputs = to_float32(inputs)   # float32, as training runs
    out = forward(**inputs)
    assert out.dtype == np.float32, f"{name}: the forward left float32 ({out.dtype})"
    d_y = rng.standard_normal(out.shape).astype(np.float32)
    analytic = backward(d_y, **inputs)
    tensors = to_torch(inputs, torch)
    reference = torch_forward(name, torch)(**tensors)
    print(f"{name}: forward max abs difference {np.abs(reference.detach().numpy() - out).max():.3g}")
    (reference * torch.tensor(d_y)).sum().backward()
    errors = {}
    for path, _ in float_leaves(inputs):
        key = path[0] if path[0] in analytic else None
        grad = pick(analytic, (key,) + path[1:]) if key else pick(analytic["params"], path)
        assert grad.dtype == np.float32, f"{name}: d_{path} is {grad.dtype}, not float32"
        errors[".".join(map(str, path))] = relative_error(grad, pick(tensors, path).grad.numpy())
    print(f"{name}: max difference from autograd, relative to the largest gradient: {errors}")
    assert max(errors.values()) < 1e-5, f"{name}: {errors}"


def test_block_forward_is_the_models_block():
    # The training forward keeps activations but must compute what model.block computes, to the bit.
    rng = np.random.default_rng(3)
    layer = to_float32(block_layer(rng))
    x = rng.standard_normal((B, T, D)).astype(np.float32)
    for window in (None, 2):
        ours, _ = bw.block_forward(x, **layer, n_head=H, eps=1e-5, mask=causal_mask(np.arange(T), np.arange(T), window))
        ref = block(x, **layer, at=Layer(n_head=H, eps=1e-5, window=window, q_idx=np.arange(T), real=np.ones((B, T), bool)))
        print(f"window {window}: max abs difference {np.abs(ours - ref).max():.3g}")
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


# Random configs: window 1, windows shorter and longer than T, 2-3 layers in every order, odd head sizes.
CONFIGS = {
    "window 1, global-local": dict(num_layers=2, attention_types=[[["global", "local"], 1]], window_size=1),
    "window 3 < T, local-global-local, head size 7": dict(num_layers=3, hidden_size=21, num_heads=3, window_size=3,
                                                          attention_types=[[["local", "global", "local"], 1]]),
    "window 16 > T, local-local, head size 5": dict(num_layers=2, hidden_size=25, num_heads=5, window_size=16,
                                                    attention_types=[[["local"], 2]]),
    "global-global-local, peaked attention": dict(num_layers=3, window_size=4, initializer_range=0.3,
                                                  attention_types=[[["global", "global", "local"], 1]]),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_loss_and_grads_equal_transformers(name, tmp_path):
    torch = pytest.importorskip("torch")
    reference = hf_model(tmp_path, seed=len(name), **CONFIGS[name])
    ids = np.random.default_rng(4).integers(0, 300, (3, 12))
    out = reference(torch.tensor(ids), labels=torch.tensor(ids))
    out.loss.backward()
    loss, grads = loss_and_grads(minineo.load(tmp_path, fast=False), ids)
    print(f"{name}: loss {loss:.6f}, transformers {out.loss.item():.6f}")
    assert abs(loss - out.loss.item()) <= 1e-5 * abs(out.loss.item())
    expected = {n: p.grad.numpy() for n, p in reference.named_parameters()}
    assert sorted(grads) == sorted(expected), f"names differ: {sorted(set(grads) ^ set(expected))}"
    assert_grads(grads, expected, name, tol=1e-4)


def test_loss_and_grads_equal_finite_differences_in_float64(tmp_path):
    # The whole model in float64 (no torch): a few entries of every tensor, nudged both ways.
    config = tiny_config(num_layers=2, hidden_size=12, num_heads=3, intermediate_size=20, window_size=3,
                         attention_layers=("local", "global"), vocab_size=40, eos_token_id=39,
                         max_position_embeddings=10)
    model = minineo.load(write_random_checkpoint(tmp_path, config, seed=5, scale=0.3), fast=False)
    params = float64_copy(model.params)
    ids = np.random.default_rng(6).integers(0, 40, (2, 7))
    loss, grads = loss_and_param_grads(params, config, ids)
    rng = np.random.default_rng(7)
    worst = {}
    for name, weight in hub_named(params).items():
        grad = hub_named(grads)[name]
        for i in [tuple(rng.integers(0, n) for n in weight.shape) for _ in range(3)] + [np.unravel_index(
                np.abs(grad).argmax(), grad.shape)]:
            kept = weight[i]
            weight[i] = kept + 1e-6
            up = loss_and_param_grads(params, config, ids)[0]
            weight[i] = kept - 1e-6
            down = loss_and_param_grads(params, config, ids)[0]
            weight[i] = kept
            worst[name] = max(worst.get(name, 0), abs((up - down) / 2e-6 - grad[i]) / np.abs(grad).max())
    print("max difference from finite differences, relative to each tensor's largest gradient:", worst)
    assert max(worst.values()) < 1e-6, worst


def float64_copy(params):
    if isinstance(params, dict):
        return {key: float64_copy(value) for key, value in params.items()}
    if isinstance(params, list):
        return [float64_copy(value) for value in params]
    return np.array(params, np.float64)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows", [4, 5, 64], ids=lambda r: f"{r} rows a block")
def test_head_and_loss_is_the_plain_head_and_cross_entropy(dtype, rows):
    # grads.head_and_loss computes in blocks, never dividing the exponentials; it must equal backward.py's
    # functions composed as a textbook would (one block, p = softmax, p - onehot, two products), with a
    # target repeated in a block and across blocks, and every block but the last one full or not.
    from minineo.train.grads import head_and_loss
    rng = np.random.default_rng(8)
    n, d, vocab = 17, 6, 11
    h, wte = (rng.standard_normal(shape).astype(dtype) for shape in ((n, d), (vocab, d)))
    targets = rng.integers(0, vocab, n)
    targets[:3] = targets[5] = targets[16] = 4
    losses, p = bw.cross_entropy(lm_head(h, wte), targets)
    d_h, d_wte = bw.lm_head_backward(bw.cross_entropy_backward(p, targets) / n, h, wte)
    loss, ours_h, ours_wte = head_and_loss(h, targets, wte, rows=rows)
    errors = {"loss": abs(loss - losses.mean(dtype=np.float64)) / abs(losses.mean()),
              "d_h": relative_error(ours_h, d_h), "d_wte": relative_error(ours_wte, d_wte)}
    print(f"{np.dtype(dtype).name}, {rows} rows a block: max difference from the plain head, relative: {errors}")
    assert ours_h.dtype == ours_wte.dtype == dtype
    assert max(errors.values()) < (1e-13 if dtype == np.float64 else 1e-6), errors
