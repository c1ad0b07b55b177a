"""What an exercise is: its reference in minineo, the inputs that expose mistakes, and the mistakes
students make, each written out as a function so that a wrong answer can be named by what it computes
(never by reading the student's code). A solution has exactly the reference's signature, so the
reference itself is the model solution. Every case builds fresh float32 inputs from a fixed seed.
"""
from dataclasses import dataclass
from typing import Callable
from unittest import mock

import numpy as np

from ..compare import ATOL, RTOL


@dataclass(frozen=True)
class Case:
    what: str                        # shown in the report: which trap this input sets
    build: Callable[[], tuple]       # -> (args, kwargs), fresh arrays on every call


@dataclass(frozen=True)
class Mistake:
    what: str                        # the mistake, named as a student would recognise it
    fix: str                         # what GPT-Neo does instead
    fn: Callable                     # the reference with that mistake: same signature


@dataclass(frozen=True)
class Exercise:
    name: str
    lesson: int
    reference: Callable
    cases: Callable[[], list]        # -> [Case]
    mistakes: list
    call: Callable = None            # (student's function or class, args, kwargs) -> output; default fn(*args, **kwargs)
    rtol: float = RTOL
    atol: float = ATOL
    checks_inputs: bool = True       # probe whether the caller's arrays were changed

    @property
    def where(self):   # "minineo.model.layer_norm.layer_norm"
        return f"{self.reference.__module__}.{self.reference.__qualname__}"

    def run(self, fn, args, kwargs):
        return fn(*args, **kwargs) if self.call is None else self.call(fn, *args, **kwargs)


def rand(seed, *shape, scale=1.0, offset=0.0):  # float32 normal values
    return (offset + scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def strided(a):  # the same values as a non-contiguous view (every other column of a wider array)
    wide = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
    wide[..., ::2] = a
    return wide[..., ::2]


def patched(fn, module, **replacements):  # fn with some of the names it calls replaced by mistaken ones
    def variant(*args, **kwargs):
        with mock.patch.multiple(module, **replacements):
            return fn(*args, **kwargs)
    return variant
