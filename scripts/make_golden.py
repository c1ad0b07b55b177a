"""Regenerate tests/golden/logits.npz: transformers' logits on minineo's seeded random checkpoints,
so that the default test run can compare against transformers where torch is not installed.

    python scripts/make_golden.py      (needs torch and transformers)
"""
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))
from golden_cases import CASES, IDS, MASK, SCALE, config  # noqa: E402

from minineo.weights.random_checkpoint import write_random_checkpoint  # noqa: E402


def main():
    golden = {}
    for seed, name in enumerate(CASES):
        with tempfile.TemporaryDirectory() as directory:
            write_random_checkpoint(directory, config(name), seed=seed, scale=SCALE)
            model = transformers.GPTNeoForCausalLM.from_pretrained(directory).eval()
            positions = np.where(MASK == 1, np.cumsum(MASK, 1) - 1, 1)
            with torch.no_grad():
                logits = model(torch.tensor(IDS), attention_mask=torch.tensor(MASK),
                               position_ids=torch.tensor(positions)).logits.numpy()
        golden[name] = logits
    np.savez_compressed(TESTS / "golden" / "logits.npz", **golden,
                        versions=np.array(f"torch {torch.__version__}, transformers {transformers.__version__}"))


if __name__ == "__main__":
    main()
