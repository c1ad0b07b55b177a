"""Random-weight checkpoints in the Hub's layout, made with NumPy alone: for tests and benchmarks
on machines with no network and no PyTorch. transformers loads them like any Hub checkpoint."""
import json
from pathlib import Path

import numpy as np

from .checkpoint import expected_shapes
from .config import config_to_dict
from .safetensors_io import write_safetensors


def write_random_checkpoint(directory, config, seed=0, dtype=np.float32, scale=0.02):
    """config.json + model.safetensors with N(0, scale) weights (0.02: GPT-Neo's initialiser) and norms
    and biases perturbed away from 1 and 0, so that a mistake in any of them changes the logits.
    A larger scale drives activations into the ranges where every constant matters (gelu's cubic term)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)

    def maker(name, shape, index):
        def make():
            rng = np.random.default_rng([seed, index])
            x = rng.standard_normal(shape, dtype=np.float32)
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
                return (1 + 0.1 * x).astype(dtype)
            return (scale * x).astype(dtype)
        return make

    tensors = {name: (np.dtype(dtype), shape, maker(name, shape, i))
               for i, (name, shape) in enumerate(sorted(expected_shapes(config).items()))}
    write_safetensors(directory / "model.safetensors", tensors, metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
    return directory
