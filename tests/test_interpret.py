"""The interpretability methods (minineo/interpret): each against the same thing assembled by hand
from run_with_cache and run_with_hooks."""
import numpy as np
import pytest

import minineo
from minineo.errors import MinineoError
from minineo.interpret import (ablate_heads, direct_logit_attribution, lens_loss, lens_top_tokens, logit_lens,
                               patch_grid)
from conftest import assert_close, random_ids


@pytest.fixture
def model(numpy_checkpoint):
    return minineo.load(numpy_checkpoint(), fast=False)


def nll(logits, ids):  # mean next-token loss of ids under logits [T, V]
    logits = logits[:-1].astype(np.float64)
    top = logits.max(-1)
    return float(np.mean(np.log(np.exp(logits - top[:, None]).sum(-1)) + top - logits[np.arange(len(ids) - 1), ids[1:]]))


def test_the_lens_of_the_last_layer_is_the_model(model):
    ids = random_ids(9)
    logits, cache = model.run_with_cache(ids)
    lens = logit_lens(model, cache)
    assert lens.shape == (5, 9, 300)
    assert_close(lens[-1], logits, "the lens's last row against the logits", tol=1e-5)
    layer_1 = model.logits(minineo.model.layer_norm.layer_norm(cache["resid_pre", 1], **model.params["ln_f"]))
    assert_close(lens[1], layer_1, "layer 1's lens by hand", tol=1e-5)
    np.testing.assert_array_equal(lens_top_tokens(model, cache, k=3)[-1], np.argsort(-logits, -1, kind="stable")[:, :3])
    losses = lens_loss(model, cache, ids)
    assert losses.shape == (5,) and abs(losses[-1] - nll(logits, ids)) < 1e-6, (losses, nll(logits, ids))
    assert abs(losses[2] - nll(lens[2], ids)) < 1e-6


@pytest.mark.parametrize("shape", [(8,), (2, 8)])
def test_direct_logit_attribution_adds_up_to_the_logit(model, shape):
    ids = random_ids(shape)
    logits, cache = model.run_with_cache(ids)
    parts = direct_logit_attribution(model, cache, token=17, position=5)
    assert parts["heads"].shape == shape[:-1] + (4, 4) and parts["mlp"].shape == shape[:-1] + (4,)
    total = parts["embed"] + parts["heads"].sum((-1, -2)) + parts["attn_bias"].sum(-1) + parts["mlp"].sum(-1) + parts["ln_bias"]
    assert_close(total, logits[..., 5, 17], "the parts' sum against the logit", tol=1e-4)
    # one head's share, by ablation: with ln_final's scale and the MLP after it held (the direct path only),
    # zeroing head 1 of the last layer removes exactly its share
    held = [("ln_final.hook_scale", lambda s, hook: cache["scale"]),
            ("blocks.3.hook_mlp_out", lambda m, hook: cache["mlp_out", 3])]
    without = model.run_with_hooks(ids, fwd_hooks=held + ablate_heads([(3, 1)]))
    assert_close(logits[..., 5, 17] - without[..., 5, 17], parts["heads"][..., 3, 1], "head 3.1's share", tol=1e-4)


def test_mean_ablation_writes_the_heads_mean(model):
    ids = random_ids((2, 6))
    _, cache = model.run_with_cache(ids)
    seen = {}
    model.run_with_hooks(ids, fwd_hooks=ablate_heads([(1, 2), (1, 0)], how="mean", cache=cache) +
                         [("blocks.1.attn.hook_z", lambda z, hook: seen.setdefault("z", z))])
    mean = cache["z", 1].reshape(-1, 4, 12).mean(0)
    np.testing.assert_allclose(seen["z"][:, :, 2], np.broadcast_to(mean[2], (2, 6, 12)))
    np.testing.assert_allclose(seen["z"][:, :, 1], cache["z", 1][:, :, 1])   # the others untouched
    with pytest.raises(MinineoError, match="how must be 'zero', or 'mean' with a cache"):
        ablate_heads([(0, 0)], how="mean")


def by_hand(model, clean, corrupted, metric, what, layer, piece):  # one patched run, assembled with a hook
    _, theirs = model.run_with_cache(clean)
    name = {"resid_pre": "blocks.{}.hook_resid_pre", "attn_out": "blocks.{}.hook_attn_out",
            "mlp_out": "blocks.{}.hook_mlp_out", "z": "blocks.{}.attn.hook_z"}[what].format(layer)

    def patch(act, hook):   # piece: a position of [..., T, d], or a head of z [..., T, H, hd]
        act = act.copy()
        act[..., piece, :] = theirs[name][..., piece, :]
        return act
    return metric(model.run_with_hooks(corrupted, fwd_hooks=[(name, patch)]))


@pytest.mark.parametrize("what", ["resid_pre", "attn_out", "mlp_out", "z"])
@pytest.mark.parametrize("shape", [(7,), (2, 7)])
def test_patching_equals_runs_assembled_by_hand(model, what, shape):
    clean, corrupted = random_ids(shape, seed=1), random_ids(shape, seed=2)
    answer, wrong = 11, 12

    def metric(logits):   # the logit difference at the last position
        return float(np.sum(logits[..., -1, answer] - logits[..., -1, wrong]))
    grid = patch_grid(model, clean, corrupted, metric, what=what)
    assert grid.shape == (4, 4 if what == "z" else 7)
    for layer in range(4):
        for piece in range(grid.shape[1]):
            expected = by_hand(model, clean, corrupted, metric, what, layer, piece)
            assert abs(grid[layer, piece] - expected) < 1e-4, (what, layer, piece, grid[layer, piece], expected)
    assert np.ptp(grid) > 1e-3   # the patches changed the metric


def test_patching_refuses_runs_of_different_lengths(model):
    with pytest.raises(MinineoError, match=r"clean ids have shape \[7\] and the corrupted ids \[6\]"):
        patch_grid(model, random_ids(7), random_ids(6), lambda logits: 0.0)


def test_attention_pattern_plot(model):
    pytest.importorskip("matplotlib")
    import matplotlib
    matplotlib.use("Agg")
    from minineo.interpret.plots import plot_attention
    _, cache = model.run_with_cache(random_ids(6))
    fig = plot_attention(cache["pattern", 1], tokens=list("abcdef"), columns=3)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 4 and [t.get_text() for t in shown[0].get_xticklabels()] == list("abcdef")
    np.testing.assert_array_equal(shown[2].images[0].get_array(), cache["pattern", 1][2])
    assert shown[3].get_title() == "head 3"
    named = plot_attention(cache["pattern", 1], heads=[2], titles=["layer 1, head 2"])
    assert [ax.get_title() for ax in named.axes] == ["layer 1, head 2"]


@pytest.mark.parametrize("what", ["resid_pre", "z"])
def test_patching_in_smaller_batches_gives_the_same_grid(model, monkeypatch, what):
    from minineo.interpret import methods
    clean, corrupted = random_ids((2, 7), seed=1), random_ids((2, 7), seed=2)

    def metric(logits):
        return float(logits[..., -1, 11].sum())
    whole = patch_grid(model, clean, corrupted, metric, what=what)
    monkeypatch.setattr(methods, "LOGITS_BYTES", 3 * 2 * 7 * 300 * 4)   # 3 patched runs at a time
    np.testing.assert_allclose(patch_grid(model, clean, corrupted, metric, what=what), whole, atol=1e-5)
