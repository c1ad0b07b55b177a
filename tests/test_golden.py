"""transformers' logits, stored: the comparison that runs even where torch is not installed."""
from pathlib import Path

import numpy as np
import pytest

import minineo
from minineo.weights.random_checkpoint import write_random_checkpoint
from conftest import assert_close
from golden_cases import CASES, IDS, MASK, SCALE, config

GOLDEN = np.load(Path(__file__).parent / "golden" / "logits.npz")


@pytest.mark.parametrize("seed, name", list(enumerate(CASES)))   # a list: pytest 10 refuses iterators
def test_logits_match_stored_transformers_logits(tmp_path, seed, name):
    model = minineo.load(write_random_checkpoint(tmp_path, config(name), seed=seed, scale=SCALE))
    print("golden logits from", GOLDEN["versions"])
    assert_close(model(IDS, attention_mask=MASK), GOLDEN[name], name, where=MASK == 1)
