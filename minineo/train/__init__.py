"""Training GPT-Neo in NumPy, read in this order:

    backward.py  the backward of every layer of minineo.model, beside its forward
    grads.py     loss_and_grads: the loss of a batch and every weight's gradient, by Hub name
    optim.py     AdamW as PyTorch computes it, clipping by the global norm, warm-up + cosine
    loop.py      the loop: batches, held-out loss, checkpoints that resume exactly, Ctrl-C, NaN

`python -m minineo.train --data FILE.txt --out DIR` (minineo/commands/train.py) runs the loop, and
`python -m minineo.train.bench` (minineo/commands/train_bench.py) times a step against PyTorch's.
"""
from .grads import loss_and_grads

__all__ = ["loss_and_grads"]
