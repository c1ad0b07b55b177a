"""AdamW as PyTorch computes it, clipping by the global norm, and the learning-rate schedule.

Weights and gradients travel as {Hub name: array}; the optimizer changes the weights in place.
"""
import math

import numpy as np


class AdamW:
    """torch.optim.AdamW's update, step for step: weight decay is decoupled (w shrinks by lr * decay
    before the Adam step, whatever the gradient), and both moments are bias-corrected."""

    def __init__(self, weights, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, decayed=None):
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        # decayed: the names that get weight decay (default all); biases and norms usually do not
        self.decayed = set(weights) if decayed is None else set(decayed)
        self.m = {name: np.zeros_like(w) for name, w in weights.items()}   # first moment, the gradient's average
        self.v = {name: np.zeros_like(w) for name, w in weights.items()}   # second moment, its square's average
        self.t = 0                                                         # steps taken

    def step(self, weights, grads, lr):
        self.t += 1
        b1, b2 = self.betas
        correction1, correction2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        scratch = np.empty(max(g.size for g in grads.values()), np.result_type(*grads.values()))
        for name, w in weights.items():
            g, m, v = grads[name], self.m[name], self.v[name]
            # one buffer for every intermediate, in the order torch computes them (the same numbers as
            # writing them out, without a weight-sized temporary for each)
            tmp = scratch[:g.size].reshape(g.shape)
            if name in self.decayed:
                w *= 1 - lr * self.weight_decay
            np.subtract(g, m, out=tmp)
            tmp *= 1 - b1
            m += tmp                   # m = b1 m + (1 - b1) g, as torch's lerp computes it: m + (1 - b1)(g - m)
            v *= b2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - b2
            v += tmp                   # v = b2 v + (1 - b2) g^2
            denominator = np.sqrt(v, out=tmp)
            denominator /= math.sqrt(correction2)
            denominator += self.eps
            np.divide(m, denominator, out=tmp)
            tmp *= lr / correction1
            w -= tmp                   # w -= lr / correction1 * m / (sqrt(v / correction2) + eps)

    def state(self):  # -> ({name: array} to save, t)
        return {**{f"m.{n}": a for n, a in self.m.items()}, **{f"v.{n}": a for n, a in self.v.items()}}, self.t

    def load_state(self, arrays, t):
        for name in self.m:
            self.m[name][...], self.v[name][...] = arrays[f"m.{name}"], arrays[f"v.{name}"]
        self.t = t


def global_norm(grads):  # {name: array} -> the norm of all gradients as one vector
    return math.sqrt(sum(float(np.dot(g.ravel(), g.ravel())) for g in grads.values()))


def clip_by_global_norm(grads, max_norm):  # in place, as torch.nn.utils.clip_grad_norm_; -> the norm before
    norm = global_norm(grads)
    scale = max_norm / (norm + 1e-6)
    if scale < 1:   # a direction kept, a step bounded: one bad batch cannot throw the weights far
        for g in grads.values():
            g *= scale
    return norm


def learning_rate(step, peak, warmup, steps, floor=0.1):  # step 1..steps -> the rate for that step
    # Linear warm-up (Adam's moments are noisy for the first steps), then a cosine down to floor * peak.
    if step <= warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(1, steps - warmup))
    return peak * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress)))
