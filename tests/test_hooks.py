"""Looking inside: every activation by name (run_with_cache), hooks that read or replace one
(run_with_hooks), against transformers' output_attentions / output_hidden_states and its weights
edited by hand, and against TransformerLens where it is installed."""
import numpy as np
import pytest

import minineo
from minineo.errors import MinineoError
from minineo.model.hooks import hook_names
from conftest import assert_close, hf_model, random_ids

SHAPES = {  # the tiny models' d 48, 4 heads of 12, inner 192
    "hook_embed": "BTd", "hook_pos_embed": "BTd", "hook_resid_pre": "BTd", "ln1.hook_scale": "BT1",
    "ln1.hook_normalized": "BTd", "attn.hook_q": "BTHh", "attn.hook_k": "BTHh", "attn.hook_v": "BTHh",
    "attn.hook_attn_scores": "BHTS", "attn.hook_pattern": "BHTS", "attn.hook_z": "BTHh", "hook_attn_out": "BTd",
    "hook_resid_mid": "BTd", "ln2.hook_scale": "BT1", "ln2.hook_normalized": "BTd", "mlp.hook_pre": "BTi",
    "mlp.hook_post": "BTi", "hook_mlp_out": "BTd", "hook_resid_post": "BTd", "ln_final.hook_scale": "BT1",
    "ln_final.hook_normalized": "BTd"}


def expected_shape(name, B, T, S):
    letters = next(shape for point, shape in SHAPES.items() if name.endswith(point))
    sizes = dict(B=B, T=T, S=S, d=48, H=4, h=12, i=192, **{"1": 1})
    return tuple(sizes[c] for c in letters if not (c == "B" and B is None))


def test_every_name_and_shape(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    logits, cache = model.run_with_cache(random_ids((2, 7)))
    assert list(cache) == hook_names(4) and len(cache) == 2 + 4 * 17 + 2
    for name, value in cache.items():
        assert value.shape == expected_shape(name, 2, 7, 7), (name, value.shape)
        assert value.dtype == np.float32, (name, value.dtype)
    _, single = model.run_with_cache(random_ids(7))   # ids [T]: no batch axis, as model(ids) gives [T, V]
    assert all(single[n].shape == expected_shape(n, None, 7, 7) for n in single)
    np.testing.assert_array_equal(single["pattern", 1], model.run_with_cache(random_ids((1, 7)))[1]["pattern", 1][0])


def test_shorthand_and_filters(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    _, cache = model.run_with_cache(random_ids((1, 6)))
    assert cache["pattern", 3] is cache["blocks.3.attn.hook_pattern"]
    assert cache["resid_post", 2] is cache["blocks.2.hook_resid_post"]
    assert cache["normalized", 1, "ln2"] is cache["blocks.1.ln2.hook_normalized"]
    assert cache["scale"] is cache["ln_final.hook_scale"] and cache["embed"] is cache["hook_embed"]
    assert list(model.run_with_cache(random_ids(6), names_filter="blocks.0.attn.hook_z")[1]) == ["blocks.0.attn.hook_z"]
    picked = model.run_with_cache(random_ids(6), names_filter=lambda n: n.endswith("hook_pattern"))[1]
    assert list(picked) == [f"blocks.{i}.attn.hook_pattern" for i in range(4)]
    both = model.run_with_cache(random_ids(6), names_filter=["hook_embed", "blocks.3.hook_mlp_out"])[1]
    assert sorted(both) == ["blocks.3.hook_mlp_out", "hook_embed"]


def test_a_cached_run_gives_the_logits_of_a_plain_one(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    ids = random_ids((2, 9))
    logits, _ = model.run_with_cache(ids)
    assert_close(logits, model(ids), "run_with_cache logits against model(ids)", tol=1e-5)


def test_no_hook_takes_the_fast_path(numpy_checkpoint, monkeypatch):
    # A run with no hook keeps the fast load's banded attention; a hooked one scores the whole matrix.
    from minineo.fast import banded
    calls = []
    model = minineo.load(numpy_checkpoint())
    monkeypatch.setattr(model, "attend", lambda *a, **k: calls.append(1) or banded.banded_attention(*a, **k))
    model(random_ids(8))
    assert len(calls) == 4
    model.run_with_cache(random_ids(8))
    assert len(calls) == 4


@pytest.fixture
def oracle(tmp_path):
    torch = pytest.importorskip("torch")

    def run(ids, mask=None, **overrides):
        ref = hf_model(tmp_path, **overrides)
        kwargs = {}
        if mask is not None:
            kwargs = dict(attention_mask=torch.tensor(mask),
                          position_ids=torch.tensor(np.where(mask == 1, np.cumsum(mask, 1) - 1, 1)))
        with torch.no_grad():
            out = ref(torch.tensor(ids), output_attentions=True, output_hidden_states=True, **kwargs)
        return ref, out
    return run


@pytest.mark.parametrize("overrides", [{}, dict(attention_types=[[["local", "global"], 2]], window_size=3),
                                       dict(hidden_size=35, num_heads=7, num_layers=3,
                                            attention_types=[[["global", "local", "local"], 1]])],
                         ids=["window 5 < T", "local first, window 3", "7 heads, 3 layers"])
def test_patterns_and_residuals_equal_transformers(tmp_path, oracle, overrides):
    ids = random_ids((2, 11))
    ref, out = oracle(ids, **overrides)
    model = minineo.load(tmp_path)
    _, cache = model.run_with_cache(ids)
    for i, theirs in enumerate(out.attentions):
        assert_close(cache["pattern", i], theirs.numpy(), f"layer {i} hook_pattern", tol=1e-5)
        assert_close(cache["resid_pre", i], out.hidden_states[i].numpy(), f"layer {i} hook_resid_pre", tol=1e-5)
    # transformers' last hidden state is after ln_f: its gain and bias on the normalized stream
    ln_f = model.params["ln_f"]
    assert_close(cache["ln_final.hook_normalized"] * ln_f["g"] + ln_f["b"], out.hidden_states[-1].numpy(),
                 "ln_final", tol=1e-5)


def test_patterns_of_a_left_padded_batch(tmp_path, oracle):
    ids = random_ids((3, 10))
    mask = np.ones_like(ids)
    mask[1, :3] = 0
    mask[2, :8] = 0
    _, out = oracle(ids, mask)
    _, cache = minineo.load(tmp_path).run_with_cache(ids, attention_mask=mask)
    real_queries = (mask == 1)[:, None, :, None]   # a pad's own row is not a token's
    for i, theirs in enumerate(out.attentions):
        assert_close(cache["pattern", i], theirs.numpy(), f"padded layer {i} pattern",
                     tol=1e-5, where=np.broadcast_to(real_queries, theirs.shape))


def test_patterns_through_the_kv_cache(tmp_path, oracle):
    # Each call caches its own new tokens; a local layer's keys in view are its last window - 1 + T.
    ids = random_ids((1, 14))
    _, out = oracle(ids, window_size=4)
    model = minineo.load(tmp_path)
    kv = model.new_cache(1)
    model.run_with_cache(ids[:, :9], cache=kv)
    _, cache = model.run_with_cache(ids[:, 9:], cache=kv)
    for i, theirs in enumerate(out.attentions):
        ours, theirs = cache["pattern", i], theirs.numpy()[:, :, 9:]   # [1, H, 5, S], [1, H, 5, 14]
        S = ours.shape[-1]
        assert S == (14 if i % 2 == 0 else 4 - 1 + 5), (i, ours.shape)
        assert_close(ours, theirs[..., 14 - S:], f"layer {i} pattern after 9 cached tokens", tol=1e-5)
        assert float(theirs[..., :14 - S].max(initial=0)) == 0.0   # what a local cache drops has weight 0
        assert cache["k", i].shape == (1, 5, 4, 12)   # the new tokens' own keys


def test_zeroing_a_head_in_z_is_zeroing_its_columns_of_out_proj(tmp_path, oracle):
    torch = pytest.importorskip("torch")
    ids = random_ids((2, 12))
    ref, _ = oracle(ids)
    layer, head, hd = 1, 2, 12

    def ablate(z, hook):   # [B, T, H, hd]
        z = z.copy()
        z[:, :, head] = 0
        return z
    ours = minineo.load(tmp_path).run_with_hooks(ids, fwd_hooks=[(f"blocks.{layer}.attn.hook_z", ablate)])
    with torch.no_grad():   # transformers 5 has no head_mask: the head's input columns of out_proj, zeroed
        ref.transformer.h[layer].attn.attention.out_proj.weight[:, head * hd:(head + 1) * hd] = 0
        theirs = ref(torch.tensor(ids)).logits.numpy()
    assert_close(ours, theirs, f"layer {layer} head {head} zeroed", tol=1e-4)
    assert np.abs(ours - minineo.load(tmp_path)(ids)).max() > 1e-3   # the ablation changed something


def test_a_hook_sees_what_it_replaces_downstream(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    ids = random_ids((1, 6))
    seen = []
    doubled = model.run_with_hooks(ids, fwd_hooks=[
        ("blocks.2.hook_resid_post", lambda x, hook: seen.append(hook.name) or x * np.float32(2)),
        ("blocks.3.hook_resid_pre", lambda x, hook: seen.append(hook.layer()))])
    assert seen == ["blocks.2.hook_resid_post", 3]
    _, cache = model.run_with_cache(ids)
    hand = model.run_with_hooks(ids, fwd_hooks=[("blocks.3.hook_resid_pre",
                                                 lambda x, hook: (2 * cache["resid_post", 2]).astype(np.float32))])
    assert_close(doubled, hand, "replacing resid_post 2 is replacing resid_pre 3", tol=1e-6)


@pytest.mark.parametrize("int8", [False, True])
def test_fast_plain_and_int8_loads_cache_alike(numpy_checkpoint, int8):
    directory = numpy_checkpoint()
    ids = random_ids((2, 9))
    ours = minineo.load(directory, int8=int8).run_with_cache(ids)[1]
    plain = minineo.load(directory, int8=int8, fast=False).run_with_cache(ids)[1]
    for name in ("blocks.1.attn.hook_pattern", "blocks.3.hook_resid_post", "blocks.0.mlp.hook_post"):
        assert_close(ours[name], plain[name], f"{name}, int8={int8}, fast against plain", tol=1e-5)


def test_hooks_stay_on_while_generating(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    lengths = []
    minineo.generate_ids(model, [[5, 6, 7]], max_new_tokens=4,
                         hooks=[("blocks.0.attn.hook_pattern", lambda p, hook: lengths.append(p.shape))])
    assert lengths == [(1, 4, 3, 3)] + [(1, 4, 1, 3 + n) for n in range(1, 4)], lengths   # the last token is never fed


@pytest.mark.parametrize("call, message", [
    (lambda m, ids: m.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_patern", print)]),
     "unknown hook name 'blocks.0.attn.hook_patern' (closest: blocks.0.attn.hook_pattern"),
    (lambda m, ids: m.run_with_cache(ids, names_filter=lambda n: "mlp.hook_mid" in n),
     "the predicate matches no hook point"),
    (lambda m, ids: m.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", lambda z, h: z[..., :3])]),
     "hook at blocks.1.attn.hook_z: returned float32 [2, 5, 4, 3], expected None or an array of float32 [2, 5, 4, 12]"),
    (lambda m, ids: m.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda e, h: e.astype(np.float64))]),
     "hook at hook_embed: returned float64 [2, 5, 48], expected None or an array of float32 [2, 5, 48]"),
    (lambda m, ids: m.run_with_cache(ids)[1]["patern", 0], "activation cache: no 'patern'"),
])
def test_mistakes_are_one_line(numpy_checkpoint, call, message):
    model = minineo.load(numpy_checkpoint())
    with pytest.raises(MinineoError) as error:
        call(model, random_ids((2, 5)))
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_every_activation_equals_transformer_lens(tmp_path):
    # TransformerLens's bridge boots the same local checkpoint offline; every name holds the same shape
    # and values, but hook_attn_scores: TransformerLens 4.3's bridge for GPT-Neo fills it with the
    # pattern (so 0 where masked), minineo with the scores before the softmax (GPT-Neo's most negative
    # float32 where masked), so there the bridge's value is compared with minineo's pattern.
    pytest.importorskip("transformer_lens")
    torch = pytest.importorskip("torch")
    from transformer_lens.model_bridge import TransformerBridge
    hf_model(tmp_path, window_size=3)
    ids = random_ids((2, 8))
    bridge = TransformerBridge.boot_transformers(str(tmp_path), device="cpu")
    with torch.no_grad():
        _, theirs = bridge.run_with_cache(torch.tensor(ids))
    _, ours = minineo.load(tmp_path).run_with_cache(ids)
    missing = [name for name in ours if name not in theirs]
    assert not missing, f"TransformerLens has no {missing[:5]}"
    for name, value in ours.items():
        reference = theirs[name].detach().float().numpy()
        if name.endswith("hook_attn_scores"):
            assert (value[reference == 0] == np.finfo(np.float32).min).all() and (reference > 0).any()
            value = ours[name.replace("hook_attn_scores", "hook_pattern")]
        assert_close(value, reference, f"TransformerLens {name}", tol=1e-5)


def test_a_cache_of_a_hooked_run_holds_what_the_hooks_made(numpy_checkpoint):
    model = minineo.load(numpy_checkpoint())
    zero = [("blocks.1.hook_attn_out", lambda a, hook: np.zeros_like(a))]
    logits, cache = model.run_with_cache(random_ids(6), fwd_hooks=zero)
    assert not cache["attn_out", 1].any()
    assert_close(cache["resid_mid", 1], cache["resid_pre", 1], "resid_mid = resid_pre when attn_out is 0", tol=0)
    assert_close(logits, model.run_with_hooks(random_ids(6), fwd_hooks=zero), "the same run's logits", tol=0)
