"""Checking a student's function against the reference, and naming the mistake when it differs.

Only behaviour is judged: the student's output on each case against the reference's, then against
each known mistaken variant's (the one that computes what the student computed names the mistake),
and the caller's arrays are compared before and after the call (changed in place is a mistake too).
"""
import functools
import inspect
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .compare import close, difference
from .exercises import CacheProblem
from .isolated import run_isolated

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


def student_step(exercise, fn, case):  # runs in the child: the student's output on one case, and what it changed
    args, kwargs = case.build()
    before = [(n, a.copy()) for n, a in named_arrays(exercise, args, kwargs)] if exercise.checks_inputs else []
    seen = call_quietly(exercise, fn, args, kwargs)
    return seen, changed_inputs(exercise, args, kwargs, before) if exercise.checks_inputs else ""


def case_results(exercise, fn, filename):
    """fn on every case, each in the child (isolated.py) -> (number, case, outcome, problem) per case, in
    order: problem is what differs from the reference (or the inputs fn changed), "" when it matches, None
    when the case did not return."""
    cases = exercise.ordered_cases()
    steps = [functools.partial(student_step, exercise, fn, case) for case in cases]
    outcomes = run_isolated(steps, functools.partial(their_line, filename=filename))
    for number, (case, outcome) in enumerate(zip(cases, outcomes), 1):
        problem = None
        if outcome.ok:
            seen, changed = outcome.value
            problem = changed or (str(seen) if isinstance(seen, CacheProblem) else difference(
                seen, call_quietly(exercise, exercise.reference, *case.build()), exercise.rtol, exercise.atol))
        yield number, case, outcome, problem


def error_lines(name, number, case, outcome, first=True):  # a case that raised or stopped, in the student's words
    if outcome.ended:
        return [f"{name}: FAILED on case {number}, {case.what}:" if first else f"  and on case {number}, {case.what}:",
                f"  your function {outcome.ended}"]
    head = f"{name}: ERROR on case {number}, {case.what}:" if first else f"  and case {number}, {case.what}, raised:"
    return [head, f"  {outcome.error}", *([f"  at {outcome.where}"] if outcome.where else [])]


def check(exercise, fn, filename=None):
    """Runs every case of `exercise` on fn (a function, or a class for the caches) -> Result.

    The student's code runs in a child process (isolated.py), one case at a time, with a time limit per
    case: only a case that returned and matched counts, so a check is OK only when every case did."""
    name = exercise.name
    cases = exercise.ordered_cases()
    failures, outputs, broken = [], {}, []   # mismatches; case number -> output; (number, case, outcome)
    for number, case, outcome, problem in case_results(exercise, fn, filename):
        if outcome.kind == "not written":
            return not_written(name, outcome)
        if not outcome.ok:
            broken.append((number, case, outcome))
            continue
        outputs[number] = outcome.value[0]
        if problem:
            failures.append((number, case, outcome.value[0], problem))
    ran = len(outputs) + len(broken)
    if not failures and not broken and ran == len(cases):
        return Result(name, "ok", [f"{name}: OK, the same as {exercise.where} on {len(cases)} cases "
                                   f"({'inputs left unchanged, ' if exercise.checks_inputs else ''}"
                                   "float32 in and out where the reference is):",
                                   *[f"  - {case.what}" for case in cases]], f"ok ({len(cases)} cases)")
    if not failures:   # nothing to diagnose: the first case that raised or stopped, as the student's line
        number, case, outcome = broken[0]
        lines = error_lines(name, number, case, outcome)
        if len(broken) > 1:
            lines.append(f"  ({len(broken) - 1} more cases raised or stopped)")
        summary = f"error: {outcome.error}" if outcome.error else f"stopped: {outcome.ended.split(':')[0]}"
        return Result(name, "error", lines, summary)
    number, case, seen, problem = failures[0]
    lines = [f"{name}: MISMATCH, {len(failures) + len(broken)} of {len(cases)} cases differ from {exercise.where}"
             + (f" ({len(broken)} of them raised or stopped)" if broken else ""),
             f"  case {number}, {case.what}:", f"    {problem}"]
    diagnosis = diagnose(exercise, outputs, failures, fn, filename)
    lines += [f"  diagnosis: {diagnosis}"]
    for b_number, b_case, outcome in broken[:1]:
        lines += error_lines(name, b_number, b_case, outcome, first=False)
    return Result(name, "mismatch", lines, diagnosis)


def not_written(name, outcome):
    where = outcome.where.split(", in ", 1)[1].split(":", 1)[0] if ", in " in outcome.where else name
    if where not in (name, "update", "__init__"):
        return Result(name, "not written", [f"{name}: not written yet, or a function it calls is not: {where} "
                                            f"raises NotImplementedError (at {outcome.where}); write {where} first"],
                      f"{where} not written yet")
    return Result(name, "not written", [f"{name}: not written yet (it raises NotImplementedError)"], "not written yet")


def diagnose(exercise, outputs, failures, fn=None, filename=None):  # -> the mistake, named, with what GPT-Neo does instead
    number, case, seen, problem = failures[0]
    if problem.startswith("changed the caller"):
        return f"your {exercise.name} changed the caller's array in place (see above)"
    if "values match but the dtype" in problem:
        return "wrong dtype (see above): keep float32 in, float32 out"
    suspects = own_helpers(exercise, fn)
    if suspects:
        blamed = blame_helpers(exercise, fn, suspects, filename)
        if blamed is not None:
            return blamed
    return diagnose_mistake(exercise, outputs, failures)


def diagnose_mistake(exercise, outputs, failures):  # which known mistake computes what the student computed
    number, case, seen, problem = failures[0]
    cases = exercise.ordered_cases()
    matches = []
    for mistake in exercise.mistakes:
        hits = 0
        for i, output in sorted(outputs.items()):
            try:
                theirs = call_quietly(exercise, mistake.fn, *cases[i - 1].build())
            except Exception:   # a mistaken variant may fail on inputs the student's code handles
                continue
            if _same(theirs, output, *(mistake.near or ())):
                hits += 1
            elif i == number:
                hits = -1
                break
        if hits > 0:
            matches.append((hits, mistake))
    if matches:
        hits, mistake = max(matches, key=lambda m: m[0])   # max keeps the first of equals: the list's order
        return (f"your {exercise.name} {mistake.what} (it computes {'exactly ' if not mistake.near else ''}that on "
                f"{hits} of {len(outputs)} cases). GPT-Neo: {mistake.fix}.")
    if "wrong shape" in problem:
        return "wrong shape (see above)"
    return (f"no known mistake computes this; case {number} (above) is the input that exposes it. "
            f"Compare your output with {exercise.where} on it.")


# ---- composite exercises: is it the student's function, or one of their own helpers it calls? -----------

def helpers_of(exercise):  # every exercise it calls, directly or through another, nearest first
    from .exercises import EXERCISES
    seen = []
    for name in exercise.uses:
        for helper in [name, *helpers_of(EXERCISES[name])]:
            if helper not in seen:
                seen.append(helper)
    return seen


def own_helpers(exercise, fn):  # -> {name: the student's own function} among the helpers fn's module calls
    from .exercises import EXERCISES
    names = getattr(fn, "__globals__", None)
    if not names or not exercise.uses:
        return {}
    return {h: names[h] for h in helpers_of(exercise)
            if callable(names.get(h)) and names[h] is not EXERCISES[h].reference and names[h] is not fn}


def with_references(fn, helpers):  # fn, calling minineo's own functions where it called the student's helpers
    from .exercises import EXERCISES
    names = fn.__globals__

    def swapped(*args, **kwargs):
        saved = {h: names[h] for h in helpers}
        names.update({h: EXERCISES[h].reference for h in helpers})
        try:
            return fn(*args, **kwargs)
        finally:
            names.update(saved)
    return swapped


def blame_helpers(exercise, fn, suspects, filename):  # -> a diagnosis naming the student's helper, or None
    from .exercises import EXERCISES
    outputs, failures, complete = {}, [], True
    for number, case, outcome, problem in case_results(exercise, with_references(fn, suspects), filename):
        if not outcome.ok:
            complete = False
            continue
        outputs[number] = outcome.value[0]
        if problem:
            failures.append((number, case, outcome.value[0], problem))
    listed = ", ".join(suspects)
    checked = {h: check(EXERCISES[h], helper, filename) for h, helper in suspects.items()}
    wrong = {h: r for h, r in checked.items() if r.status not in ("ok", "not written")}   # a stub it never calls: no blame
    # a helper that fails only because of another helper of the student's is not named: that one is
    wrong = {h: r for h, r in wrong.items() if not any(f"{other} " in r.summary and "differ" in r.summary
                                                       for other in wrong if other != h)} or wrong
    if not failures and complete:   # minineo's helpers put it right: the fault is in the student's helpers
        if wrong:
            return "; ".join(f"your {h} (checked: {short(r.summary, h)}) makes {exercise.name} differ"
                             for h, r in wrong.items()) + \
                (f". With minineo's {', '.join(wrong)} in place of yours, your {exercise.name} matches on every "
                 f"case: fix {' and '.join(wrong)} first ({how_to_check(next(iter(wrong)), filename)})")
        return (f"with minineo's own {listed} in place of yours, your {exercise.name} matches on every case, "
                f"though your {listed} pass{'es' if len(suspects) == 1 else ''} their own checks: look at how "
                f"{exercise.name} calls them (arguments, shapes), or at inputs the checks do not cover")
    if not failures:
        return None
    also = (f" (your {', '.join(wrong)} also fail{'s' if len(wrong) == 1 else ''} {'its' if len(wrong) == 1 else 'their'} "
            f"own checks: fix {'it' if len(wrong) == 1 else 'them'} too)") if wrong else ""
    return (f"the fault is in {exercise.name} itself: with minineo's own {listed} in place of yours it still "
            f"differs{also}. " + diagnose_mistake(exercise, outputs, failures))


def how_to_check(name, filename):  # the command (or the notebook call) that checks one function
    return f"python -m minineo.check {name} {filename}" if filename else f'check("{name}", {name})'


def short(summary, helper):  # a helper's diagnosis, in a few words: "has the window off by one: ..."
    return summary.removeprefix(f"your {helper} ").split(" (it computes")[0].split(". GPT-Neo:")[0]


def _same(a, b, rtol=None, atol=None):
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    return close(a, b) if rtol is None else close(a, b, rtol, atol)
