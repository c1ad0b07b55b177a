"""The checkpoints and inputs behind tests/golden/logits.npz (written by scripts/make_golden.py).
Weights come from minineo's seeded NumPy writer, so the test rebuilds them instead of storing them."""
import numpy as np

from conftest import tiny_config

CASES = {
    "global_local": dict(),
    "local_first_odd_heads": dict(hidden_size=35, num_heads=7, num_layers=3, window_size=3,
                                  attention_layers=("local", "global", "local"), intermediate_size=50),
    "all_local_eps": dict(attention_layers=("local",) * 4, layer_norm_epsilon=1e-3),
}
# Weights of scale 0.2, ten times GPT-Neo's initialiser: pre-activations reach |x| ~ 3, where gelu_new's
# cubic term and every other constant change the logits well beyond the comparison's tolerance.
SCALE = 0.2
IDS = np.random.default_rng(1234).integers(0, 300, (2, 21))
MASK = (np.arange(21)[None, :] >= np.array([[0], [6]])).astype(np.int64)   # row 1 left-padded by 6


def config(name):
    return tiny_config(**CASES[name])
