"""minineo.sampling against transformers' own logits processors, plus sampler checks.

The comparison tests skip when torch/transformers are missing; the rest need only NumPy.
"""

import warnings
from types import SimpleNamespace

import numpy as np
import pytest

from minineo.errors import MinineoError
from minineo.text import sampling
from minineo.text import settings as settings_module

SEEDS = [0, 1, 2, 3]
BATCH, VOCAB = 4, 1000


@pytest.fixture
def lp():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers.generation.logits_process")


def normal_logits(seed, batch=BATCH, vocab=VOCAB):
    return (np.random.default_rng(seed).standard_normal((batch, vocab)) * 3).astype(np.float32)


def tied_logits(seed, batch=BATCH, vocab=VOCAB):
    # few distinct values, so every cut-off lands inside a group of equal logits
    return np.random.default_rng(seed).integers(-4, 5, size=(batch, vocab)).astype(np.float32)


def hf(processor, ids, logits):
    import torch

    return processor(torch.from_numpy(np.array(ids, dtype=np.int64)), torch.from_numpy(logits.copy())).numpy()


def assert_same_logits(ours, theirs, atol=1e-6):
    assert ours.dtype == np.float32, f"dtype {ours.dtype}, expected float32"
    assert ours.shape == theirs.shape, f"shape {ours.shape} vs {theirs.shape}"
    ours_inf, theirs_inf = np.isneginf(ours), np.isneginf(theirs)
    if not np.array_equal(ours_inf, theirs_inf):
        first = tuple(int(i) for i in np.argwhere(ours_inf != theirs_inf)[0])
        raise AssertionError(
            f"-inf positions differ at {int((ours_inf != theirs_inf).sum())} places; first {first}: "
            f"ours {ours[first]}, transformers {theirs[first]}"
        )
    diff = np.abs(np.where(ours_inf, 0, ours) - np.where(ours_inf, 0, theirs))
    if diff.max() > atol:
        first = tuple(int(i) for i in np.argwhere(diff > atol)[0])
        raise AssertionError(
            f"max abs diff {diff.max():.3g} > {atol}; first differing index {first}: "
            f"ours {ours[first]}, transformers {theirs[first]}"
        )


# --- comparisons with transformers ----------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("penalty", [1.2, 2.0, 0.7])
def test_repetition_penalty_matches_transformers(lp, seed, penalty):
    logits = normal_logits(seed)
    # ids drawn from a small range so most of them repeat
    ids = np.random.default_rng(seed + 100).integers(0, 40, size=(BATCH, 30))
    ours = sampling.apply_repetition_penalty(logits, ids, penalty)
    assert_same_logits(ours, hf(lp.RepetitionPenaltyLogitsProcessor(penalty), ids, logits))


@pytest.mark.parametrize("seed", SEEDS)
def test_repetition_penalty_left_padding_matches_generate(lp, seed):
    import torch

    rng = np.random.default_rng(seed)
    logits = normal_logits(seed)
    pad_id = VOCAB - 1
    ids = rng.integers(0, 40, size=(BATCH, 12))
    pad_counts = np.array([0, 3, 7, 11])
    mask = np.arange(12)[None, :] >= pad_counts[:, None]
    ids[~mask] = pad_id
    # exactly what transformers' generate passes (generation/utils.py, _get_logits_processor)
    ignore = (torch.from_numpy(mask) != 0).int().argmax(dim=1)
    theirs = hf(lp.RepetitionPenaltyLogitsProcessor(1.5, prompt_ignore_length=ignore), ids, logits)
    ours = sampling.apply_repetition_penalty(logits, ids, 1.5, attention_mask=mask)
    assert_same_logits(ours, theirs)
    assert np.array_equal(ours[:, pad_id], logits[:, pad_id]), "pad token was penalised"
    unmasked = sampling.apply_repetition_penalty(logits, ids, 1.5)
    assert not np.array_equal(unmasked[1:, pad_id], logits[1:, pad_id]), "without a mask pads should count"


@pytest.mark.parametrize("eos", [VOCAB - 1, [5, VOCAB - 1]])
def test_min_new_tokens_matches_transformers(lp, eos):
    logits = normal_logits(0)
    prompt_len, min_new = 6, 3
    processor = lp.MinNewTokensLengthLogitsProcessor(prompt_len, min_new, eos)
    for new in range(min_new + 2):
        ids = np.zeros((BATCH, prompt_len + new), dtype=np.int64)
        ours = sampling.apply_min_length(logits, eos, new, min_new)
        assert_same_logits(ours, hf(processor, ids, logits))
    min_length = 9
    processor = lp.MinLengthLogitsProcessor(min_length, eos)
    for length in range(7, 11):
        ids = np.zeros((BATCH, length), dtype=np.int64)
        assert_same_logits(sampling.apply_min_length(logits, eos, length, min_length), hf(processor, ids, logits))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("temperature", [0.3, 0.7, 1.5])
def test_temperature_matches_transformers(lp, seed, temperature):
    logits = normal_logits(seed)
    theirs = hf(lp.TemperatureLogitsWarper(temperature), [[0]] * BATCH, logits)
    assert_same_logits(sampling.apply_temperature(logits, temperature), theirs, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("make_logits", [normal_logits, tied_logits])
@pytest.mark.parametrize("k", [1, 5, 50, VOCAB, VOCAB + 10])
def test_top_k_matches_transformers(lp, seed, make_logits, k):
    logits = make_logits(seed)
    theirs = hf(lp.TopKLogitsWarper(k), [[0]] * BATCH, logits)
    assert_same_logits(sampling.top_k_filter(logits, k), theirs, atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_p", [1e-6, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_top_p_matches_transformers(lp, seed, top_p):
    logits = normal_logits(seed)
    theirs = hf(lp.TopPLogitsWarper(top_p), [[0]] * BATCH, logits)
    assert_same_logits(sampling.top_p_filter(logits, top_p), theirs, atol=0)


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_filters_match_transformers_at_gpt2_vocab_size(lp, seed):
    logits = normal_logits(seed, batch=2, vocab=50257)
    for k, top_p in [(50, 0.9), (0, 0.95), (1000, 0.5)]:
        ours = sampling.top_p_filter(sampling.top_k_filter(logits, k), top_p)
        # transformers rejects top_k=0 in the warper; generate leaves the warper out instead
        warpers = ([lp.TopKLogitsWarper(k)] if k else []) + [lp.TopPLogitsWarper(top_p)]
        assert_same_logits(ours, hf(lp.LogitsProcessorList(warpers), [[0]] * 2, logits), atol=0)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("top_p", [1e-6, 0.3, 0.8])
def test_top_p_with_ties_keeps_same_values_as_transformers(lp, seed, top_p):
    # torch.sort is unstable, so when a tie straddles the cut transformers keeps arbitrary
    # members of it; only the kept *values* (how many of each) are defined.
    logits = tied_logits(seed)
    ours = sampling.top_p_filter(logits, top_p)
    theirs = hf(lp.TopPLogitsWarper(top_p), [[0]] * BATCH, logits)
    for row in range(BATCH):
        kept_ours = np.sort(ours[row][np.isfinite(ours[row])])
        kept_theirs = np.sort(theirs[row][np.isfinite(theirs[row])])
        assert np.array_equal(kept_ours, kept_theirs), (
            f"row {row}: kept {kept_ours.size} tokens vs transformers {kept_theirs.size}; "
            f"value counts ours {np.unique(kept_ours, return_counts=True)}, "
            f"transformers {np.unique(kept_theirs, return_counts=True)}"
        )


def generate_processors(**config):
    """The processor list transformers' generate builds, via its own _get_logits_processor."""
    import torch
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    mask = config.pop("attention_mask", None)
    prompt_len = config.pop("prompt_len")
    generation_config = GenerationConfig(**config)
    generation_config._eos_token_tensor = torch.tensor([VOCAB - 1])
    decoder_only_model = SimpleNamespace(
        config=SimpleNamespace(is_encoder_decoder=False), _merge_criteria_processor_list=lambda default, custom: default
    )
    return GenerationMixin._get_logits_processor(
        decoder_only_model,
        generation_config,
        input_ids_seq_length=prompt_len,
        device="cpu",
        model_kwargs={} if mask is None else {"attention_mask": torch.from_numpy(mask)},
    )


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("do_sample", [True, False])
def test_process_logits_matches_generate_pipeline(lp, seed, do_sample):
    rng = np.random.default_rng(seed)
    prompt_len, min_new = 8, 3
    pad_counts = np.array([0, 2, 5, 1])
    mask = np.arange(prompt_len)[None, :] >= pad_counts[:, None]
    settings = dict(temperature=0.7, top_k=20, top_p=0.9, repetition_penalty=1.3)
    processors = generate_processors(
        do_sample=do_sample, min_new_tokens=min_new, prompt_len=prompt_len, attention_mask=mask, **settings
    )
    names = [type(p).__name__ for p in processors]
    expected = ["RepetitionPenaltyLogitsProcessor", "MinNewTokensLengthLogitsProcessor"]
    if do_sample:
        expected += ["TemperatureLogitsWarper", "TopKLogitsWarper", "TopPLogitsWarper"]
    assert names == expected, f"transformers' processor order changed: {names}"
    settings["do_sample"] = do_sample
    ids = rng.integers(0, 60, size=(BATCH, prompt_len))
    ids[~mask] = VOCAB - 1
    for new in range(min_new + 2):
        # bias EOS upwards so the min-length suppression visibly matters
        logits = normal_logits(seed * 10 + new)
        logits[:, VOCAB - 1] += 10
        full_mask = np.concatenate([mask, np.ones((BATCH, new), dtype=bool)], axis=1)
        ours = sampling.process_logits(
            logits, ids, num_new_tokens=new, eos_token_id=VOCAB - 1, attention_mask=full_mask,
            min_new_tokens=min_new, **settings,
        )
        assert_same_logits(ours, hf(processors, ids, logits))
        ids = np.concatenate([ids, rng.integers(0, 60, size=(BATCH, 1))], axis=1)


@pytest.mark.parametrize("seed", SEEDS)
def test_defaults_match_generate_defaults(lp, seed):
    from transformers import GenerationConfig

    defaults = GenerationConfig._get_default_generation_params()
    ours = {
        "temperature": settings_module.DEFAULT_TEMPERATURE,
        "top_k": settings_module.DEFAULT_TOP_K,
        "top_p": settings_module.DEFAULT_TOP_P,
        "repetition_penalty": settings_module.DEFAULT_REPETITION_PENALTY,
    }
    assert ours == {name: defaults[name] for name in ours}, f"transformers defaults: {defaults}"
    assert defaults["do_sample"] is False
    processors = generate_processors(**{**defaults, "do_sample": True, "prompt_len": 4})
    ids = np.zeros((BATCH, 4), dtype=np.int64)
    logits = normal_logits(seed)
    assert_same_logits(sampling.process_logits(logits, ids, do_sample=True), hf(processors, ids, logits))


# --- NumPy-only checks ------------------------------------------------------------------------


def test_repetition_penalty_by_hand():
    logits = np.array([[2.0, -2.0, 1.0, 0.5], [2.0, -2.0, 1.0, 0.5]], dtype=np.float32)
    ids = np.array([[0, 1, 0], [3, 3, 2]])
    mask = np.array([[True, True, True], [False, True, True]])
    ours = sampling.apply_repetition_penalty(logits, ids, 2.0, attention_mask=mask)
    # row 0: ids 0 (twice, penalised once) and 1; row 1: the masked 3 still counts via position 1
    expected = np.array([[1.0, -4.0, 1.0, 0.5], [2.0, -2.0, 0.5, 0.25]], dtype=np.float32)
    assert np.array_equal(ours, expected), f"got {ours}"
    only_pad = sampling.apply_repetition_penalty(logits[:1], np.array([[3, 0]]), 2.0, np.array([[False, True]]))
    assert only_pad[0, 3] == 0.5, f"pad id 3 was penalised: {only_pad}"


def test_functions_keep_float32_and_do_not_mutate():
    logits = normal_logits(0)
    before = logits.copy()
    ids = np.random.default_rng(0).integers(0, VOCAB, size=(BATCH, 5))
    outputs = {
        "repetition": sampling.apply_repetition_penalty(logits, ids, np.float64(1.3)),
        "min_length": sampling.apply_min_length(logits, 3, 0, 2),
        "temperature": sampling.apply_temperature(logits, np.float64(0.5)),
        "top_k": sampling.top_k_filter(logits, 10),
        "top_p": sampling.top_p_filter(logits, 0.5),
        "softmax": sampling.softmax(logits),
    }
    for name, out in outputs.items():
        assert out.dtype == np.float32, f"{name} returned {out.dtype}"
    assert np.array_equal(logits, before), "input logits were modified"


def test_min_length_masks_only_eos_until_reached():
    logits = normal_logits(1)
    out = sampling.apply_min_length(logits, [2, 7], 1, 2)
    assert np.isneginf(out[:, [2, 7]]).all()
    assert np.array_equal(np.delete(out, [2, 7], axis=1), np.delete(logits, [2, 7], axis=1))
    assert sampling.apply_min_length(logits, [2, 7], 2, 2) is logits


def test_top_k_keeps_ties_and_clips_k():
    logits = np.array([[3.0, 1.0, 3.0, 2.0, 2.0]], dtype=np.float32)
    assert np.isfinite(sampling.top_k_filter(logits, 3)).tolist() == [[True, False, True, True, True]]
    assert np.array_equal(sampling.top_k_filter(logits, 99), logits)
    assert sampling.top_k_filter(logits, 0) is logits


def test_tiny_top_p_keeps_the_greedy_token_even_with_ties():
    logits = np.array([[1.0, 5.0, 0.0, 5.0, 5.0]], dtype=np.float32)
    kept = np.flatnonzero(np.isfinite(sampling.top_p_filter(logits, 1e-9)))
    assert kept.tolist() == [int(sampling.greedy(logits)[0])] == [1], f"kept {kept}"


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_1_sampling_equals_greedy(seed):
    logits = normal_logits(seed, batch=8)
    ids = np.zeros((8, 1), dtype=np.int64)
    greedy = sampling.next_token(logits, ids)   # do_sample=False, the default, is greedy
    assert np.array_equal(greedy, np.argmax(logits, axis=-1))
    for draw in range(20):
        rng = np.random.default_rng(seed * 100 + draw)
        sampled = sampling.next_token(logits, ids, rng, do_sample=True, temperature=1.3, top_k=1)
        assert np.array_equal(sampled, greedy), f"draw {draw}: sampled {sampled}, greedy {greedy}"


def test_greedy_applies_repetition_penalty_like_generate():
    logits = np.array([[2.0, 1.9, 0.0]], dtype=np.float32)
    picked = sampling.next_token(logits, np.array([[0]]), do_sample=False, repetition_penalty=1.2)
    assert picked.tolist() == [1]


def test_seeded_generator_is_reproducible():
    logits = normal_logits(5)
    ids = np.zeros((BATCH, 1), dtype=np.int64)

    def run(seed):
        rng = np.random.default_rng(seed)
        return np.stack([sampling.next_token(logits, ids, rng, do_sample=True, top_k=0) for _ in range(50)])

    first, again, other = run(42), run(42), run(43)
    assert np.array_equal(first, again), f"first mismatch at {np.argwhere(first != again)[0]}"
    assert not np.array_equal(first, other), "different seeds gave identical draws"


def test_sample_distribution_matches_softmax():
    logits = np.array([[2.0, 1.0, 0.5, 0.0, -1.0, -np.inf, 1.5, -3.0]], dtype=np.float32)
    draws = 200_000
    tokens = sampling.sample(np.repeat(logits, draws, axis=0), np.random.default_rng(1234))
    freq = np.bincount(tokens, minlength=logits.shape[1]) / draws
    probs = sampling.softmax(logits)[0]
    # the standard error of each frequency is below 0.0012; 0.01 is a generous bound
    worst = int(np.argmax(np.abs(freq - probs)))
    assert abs(freq[worst] - probs[worst]) < 0.01, f"token {worst}: frequency {freq[worst]:.4f}, softmax {probs[worst]:.4f}"
    assert freq[5] == 0, "a -inf token was drawn"


def test_filtered_tokens_are_never_drawn():
    logits = normal_logits(7, batch=2000, vocab=50)
    filtered = sampling.top_p_filter(sampling.top_k_filter(logits, 5), 0.6)
    tokens = sampling.sample(filtered, np.random.default_rng(0))
    picked = filtered[np.arange(len(tokens)), tokens]
    assert np.isfinite(picked).all(), f"first filtered draw at row {np.flatnonzero(~np.isfinite(picked))[:1]}"


def test_sampling_without_generator_is_an_error():
    with pytest.raises(MinineoError, match="Generator"):
        sampling.next_token(normal_logits(0), np.zeros((BATCH, 1), dtype=np.int64), do_sample=True)


@pytest.mark.parametrize(
    "setting, value",
    [
        ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
        ("top_k", -1), ("top_k", 2.5), ("top_k", True),
        ("top_p", 0.0), ("top_p", 1.01), ("top_p", float("nan")),
        ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
        ("min_new_tokens", -1), ("min_new_tokens", 1.5),
    ],
)
def test_validation_rejects_bad_settings(setting, value):
    settings = dict(do_sample=True, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, min_new_tokens=0)
    settings[setting] = value
    with pytest.raises(ValueError, match=f"^{setting} must be") as error:
        settings_module.validate_sampling_settings(**settings)
    assert "\n" not in str(error.value)


def test_validation_accepts_edge_settings():
    settings_module.validate_sampling_settings(do_sample=True, temperature=1e-6, top_k=0, top_p=1.0, repetition_penalty=1e-3,
                                        min_new_tokens=0)
    settings_module.validate_sampling_settings(
        do_sample=True, temperature=np.float32(0.5), top_k=np.int64(10), top_p=1e-9, repetition_penalty=2, min_new_tokens=5
    )


def test_greedy_warns_once_about_sampling_settings_it_ignores():
    with pytest.warns(UserWarning, match="do_sample is False .*temperature=0.7, top_p=0.9 has no effect"):
        settings_module.validate_sampling_settings(do_sample=False, temperature=0.7, top_k=50, top_p=0.9,
                                            repetition_penalty=1.0, min_new_tokens=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # the defaults are no news
        settings_module.validate_sampling_settings(do_sample=False, temperature=1.0, top_k=50, top_p=1.0,
                                            repetition_penalty=1.0, min_new_tokens=0)
