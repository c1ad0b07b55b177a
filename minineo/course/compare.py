"""Comparing a student's output with the reference's: shape, dtype and values, said in words.

A difference is a short text: what was expected, what was seen, the largest difference and where
the two first differ, so that a student can find the element in their own output.
"""
import numpy as np

# float32 results of the same math written differently (another summation order, einsum, float64
# inside) differ by a few units in the last place; a mistake differs by far more.
RTOL, ATOL = 1e-4, 1e-5


def describe(value):  # -> "float32 [2, 3, 8]", or the type of something that is no array
    if hasattr(value, "described"):   # a value that could not travel back from the child process
        return value.described
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {list(value.shape)}"
    if isinstance(value, (list, tuple)):
        return f"a {type(value).__name__} of {len(value)}"
    return f"a {type(value).__name__}"


def close(a, b, rtol=RTOL, atol=ATOL):  # the same values (NaN where the other has NaN), any dtype
    if isinstance(a, (list, tuple)) or isinstance(b, (list, tuple)):
        return (isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(close(x, y, rtol, atol) for x, y in zip(a, b)))
    if not isinstance(a, np.ndarray) or not isinstance(b, np.ndarray) or a.shape != b.shape:
        return False
    return not _differs(a, b, rtol, atol).any()


def _differs(seen, expected, rtol, atol):  # -> bool array: where seen is not expected
    if expected.dtype == bool or seen.dtype == bool or not np.issubdtype(expected.dtype, np.floating):
        return seen != expected
    seen, expected = seen.astype(np.float64), expected.astype(np.float64)
    finite = np.isfinite(expected)
    scale = max(1.0, float(np.abs(expected[finite]).max())) if finite.any() else 1.0
    with np.errstate(invalid="ignore"):
        far = ~(np.abs(seen - expected) <= atol * scale + rtol * np.abs(expected))
    # inf and NaN are right only where the reference has the same
    return np.where(finite, far, ~((seen == expected) | (np.isnan(seen) & np.isnan(expected))))


def difference(seen, expected, rtol=RTOL, atol=ATOL, what="the output"):
    """None when seen matches expected (values, shape and dtype), else what differs, in words."""
    if isinstance(expected, (list, tuple)):
        if not isinstance(seen, (list, tuple)) or len(seen) != len(expected):
            return f"{what}: expected {describe(expected)}, seen {describe(seen)}"
        return next(filter(None, (difference(s, e, rtol, atol, name) for s, e, name
                                  in zip(seen, expected, getattr(expected, "names", None) or
                                         [f"{what} {i}" for i in range(len(expected))]))), None)
    if not isinstance(seen, np.ndarray):
        return f"{what}: expected a NumPy array ({describe(expected)}), seen {describe(seen)}"
    if seen.shape != expected.shape:
        return f"{what}: wrong shape, expected {list(expected.shape)}, seen {list(seen.shape)}"
    wrong = _differs(seen, expected, rtol, atol)
    if wrong.any():
        first = tuple(int(i) for i in np.argwhere(wrong)[0])
        text = f"{what}: values differ at {wrong.sum()} of {wrong.size} elements; first at {list(first)}: " \
               f"expected {_value(expected[first])}, seen {_value(seen[first])}"
        if np.issubdtype(expected.dtype, np.floating) and np.issubdtype(seen.dtype, np.floating):
            with np.errstate(invalid="ignore"):
                gap = np.abs(seen.astype(np.float64) - expected)
            gap = np.where(np.isnan(gap) & wrong, np.inf, np.where(wrong, gap, 0))
            worst = tuple(int(i) for i in np.unravel_index(np.argmax(gap), gap.shape))
            text += f"; max difference {_value(gap[worst])} at {list(worst)}"
        nans = np.isnan(seen).sum() if np.issubdtype(seen.dtype, np.floating) else 0
        if nans and not (np.issubdtype(expected.dtype, np.floating) and np.isnan(expected).any()):
            rows = np.argwhere(np.isnan(seen).reshape(-1, seen.shape[-1]).any(axis=-1)).ravel() if seen.ndim else []
            text += f"; {nans} NaN values (the reference has none)" + \
                (f", in rows {rows[:6].tolist()} of the last axis" if len(rows) else "")
        return text
    if seen.dtype != expected.dtype:
        return f"{what}: values match but the dtype differs: expected {expected.dtype}, seen {seen.dtype}" + \
            (" (a float64 constant or np.float64 scalar promotes float32 arrays; keep the math in float32)"
             if seen.dtype == np.float64 and expected.dtype == np.float32 else "")
    return None


def _value(v):
    return f"{v:.6g}" if isinstance(v, (float, np.floating)) else str(v.item() if hasattr(v, "item") else v)


class Named(tuple):
    """A tuple of outputs that carries a name for each, used in what a difference says."""
    def __new__(cls, items, names):
        self = super().__new__(cls, items)
        self.names = list(names)
        return self

    def __reduce__(self):   # travels back from the checker's child process with its names
        return Named, (tuple(self), self.names)
