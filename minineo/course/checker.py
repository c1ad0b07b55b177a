"""Checking a student's function against the reference, and naming the mistake when it differs.

Only behaviour is judged: the student's output on each case against the reference's, then against
each known mistaken variant's (the one that computes what the student computed names the mistake),
and the caller's arrays are compared before and after the call (changed in place is a mistake too).
"""
import inspect
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare import close, difference
from .exercises import CacheProblem

PACKAGE = Path(__file__).resolve().parent.parent   # minineo/: frames here are the checker's, not the student's


@dataclass
class Result:
    name: str
    status: str                  # "ok", "mismatch", "not written", "error"
    lines: list = field(default_factory=list)
    summary: str = ""            # one line, for the table of check-all

    @property
    def ok(self):
        return self.status == "ok"


def their_line(error, filename=None):
    """The line of the student's own code where `error` was raised, as 'file, line N, in f: code'."""
    frames = traceback.extract_tb(error.__traceback__)
    own = [f for f in frames if (Path(f.filename).resolve() == Path(filename).resolve() if filename else
                                 not Path(f.filename).resolve().is_relative_to(PACKAGE)) and "site-packages" not in f.filename]
    frame = (own or frames or [None])[-1]
    where = "" if frame is None else f"{Path(frame.filename).name}, line {frame.lineno}, in {frame.name}: {(frame.line or '').strip()}"
    return f"{type(error).__name__}: {error}", where


def call_quietly(exercise, fn, args, kwargs):  # the output; overflow and NaN warnings are the report's job
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return exercise.run(fn, args, kwargs)


def arrays_in(value, name):  # (name, array) for every array inside an argument (dicts of weights included)
    if isinstance(value, np.ndarray):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from arrays_in(item, f"{name}[{key!r}]")


def changed_inputs(exercise, args, kwargs, before):  # -> "", or which of the caller's arrays the call changed, and how
    for (name, now), (_, then) in zip(named_arrays(exercise, args, kwargs), before):
        if now.shape != then.shape or not np.array_equal(now, then, equal_nan=True):
            return (f"changed the caller's `{name}` in place (the caller still needs it; compute a new array "
                    f"instead). {difference(now, then, what=f'`{name}` after the call (expected: as it was given)')}")
    return ""


def named_arrays(exercise, args, kwargs):
    bound = inspect.signature(exercise.reference).bind(*args, **kwargs)
    return [pair for name, value in bound.arguments.items() for pair in arrays_in(value, name)]


def check(exercise, fn, filename=None):
    """Runs every case of `exercise` on fn (a function, or a class for the caches) -> Result."""
    name = exercise.name
    failures = []   # (case number, case, output, what differs)
    outputs = []
    for number, case in enumerate(exercise.cases(), 1):
        args, kwargs = case.build()
        before = [(n, a.copy()) for n, a in named_arrays(exercise, args, kwargs)] if exercise.checks_inputs else []
        try:
            seen = call_quietly(exercise, fn, args, kwargs)
        except NotImplementedError:
            return Result(name, "not written", [f"{name}: not written yet (it raises NotImplementedError)"],
                          "not written yet")
        except Exception as error:   # the student's bug, reported as their line, not as the checker's traceback
            message, where = their_line(error, filename)
            return Result(name, "error", [f"{name}: ERROR on case {number}, {case.what}:", f"  {message}",
                                          *([f"  at {where}"] if where else [])], f"error: {message}")
        expected = call_quietly(exercise, exercise.reference, *case.build())
        outputs.append(seen)
        changed = changed_inputs(exercise, args, kwargs, before) if exercise.checks_inputs else []
        if changed:
            failures.append((number, case, seen, changed))
            continue
        problem = str(seen) if isinstance(seen, CacheProblem) else difference(seen, expected, exercise.rtol, exercise.atol)
        if problem:
            failures.append((number, case, seen, problem))
    cases = exercise.cases()
    if not failures:
        return Result(name, "ok", [f"{name}: OK, the same as {exercise.where} on {len(cases)} cases "
                                   f"({'inputs left unchanged, ' if exercise.checks_inputs else ''}"
                                   "float32 in and out where the reference is):",
                                   *[f"  - {case.what}" for case in cases]], f"ok ({len(cases)} cases)")
    number, case, seen, problem = failures[0]
    lines = [f"{name}: MISMATCH, {len(failures)} of {len(cases)} cases differ from {exercise.where}",
             f"  case {number}, {case.what}:", f"    {problem}"]
    diagnosis = diagnose(exercise, outputs, failures)
    lines += [f"  diagnosis: {diagnosis}"]
    return Result(name, "mismatch", lines, diagnosis)


def diagnose(exercise, outputs, failures):  # -> the mistake, named, with what GPT-Neo does instead
    number, case, seen, problem = failures[0]
    if problem.startswith("changed the caller"):
        return f"your {exercise.name} {problem}"
    if "values match but the dtype" in problem:
        return f"wrong dtype: {problem.split(': ', 1)[1]}"
    matches = []
    for mistake in exercise.mistakes:
        hits = 0
        for i, case_ in enumerate(exercise.cases()[:len(outputs)]):
            try:
                theirs = call_quietly(exercise, mistake.fn, *case_.build())
            except Exception:   # a mistaken variant may fail on inputs the student's code handles
                continue
            if _same(theirs, outputs[i]):
                hits += 1
            elif i == number - 1:
                hits = -1
                break
        if hits > 0:
            matches.append((hits, mistake))
    if matches:
        hits, mistake = max(matches, key=lambda m: m[0])   # max keeps the first of equals: the list's order
        return (f"your {exercise.name} {mistake.what} (it computes exactly that on {hits} of {len(outputs)} cases). "
                f"GPT-Neo: {mistake.fix}.")
    if "wrong shape" in problem:
        return f"wrong shape: {problem.split(': ', 1)[1]}"
    return (f"no known mistake computes this; case {number} ({case.what}) is the input that exposes it. "
            f"Compare your output with {exercise.where} on it.")


def _same(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return close(a, b)
