"""python -m minineo.check NAME FILE.py: a student's function checked against minineo's, the mistake named.

    python -m minineo.check layer_norm my_neo.py             one exercise
    python -m minineo.check layer_norm my_neo.py --in-model  and what it does inside the bundled model
    python -m minineo.check all my_neo.py                    every exercise in the file, as a table

Exit 0 when every function checked matches, 1 when one does not (or is not written yet), 2 for a
mistake in the command itself (an unknown exercise, a missing file or function, a file that does not import).
"""
from ..course.checker import check
from ..course.exercises import EXERCISES, LESSONS
from ..course.student import exercise_named, function_in, load_file
from .common import FAILURE, Parser, run_command


def run(args):
    exercises = list(EXERCISES.values()) if args.name == "all" else [exercise_named(args.name)]
    module = load_file(args.file)   # a UsageError (exit 2) for a missing file or one that does not import
    if args.name != "all":
        function_in(module, args.file, args.name)
    if args.name == "all":
        return check_all(module, args.file, exercises)
    exercise = exercises[0]
    fn = getattr(module, exercise.name)
    result = check(exercise, fn, args.file)
    print("\n".join(result.lines))
    if args.in_model:
        from ..course.in_model import in_model   # loads the bundled model: only when asked
        print()
        print("\n".join(in_model(exercise, fn, args.file)))
    return 0 if result.ok else FAILURE


def check_all(module, path, exercises):  # a table: one row per exercise, and the first mistake's diagnosis below
    rows = []
    for exercise in exercises:
        fn = getattr(module, exercise.name, None)
        result = check(exercise, fn, path) if callable(fn) else None
        rows.append((exercise, result))
    width = max(len(e.name) for e in exercises)
    print(f"{'lesson':6}  {'exercise':{width}}  result")
    for exercise, result in rows:
        status = "missing from the file" if result is None else result.status.upper() if not result.ok else "ok"
        note = "" if result is None or result.ok or result.status == "not written" else f": {result.summary}"
        print(f"{exercise.lesson:6}  {exercise.name:{width}}  {status}{note}")
    passed = sum(1 for _, r in rows if r is not None and r.ok)
    print(f"\n{passed} of {len(rows)} exercises pass" +
          ("" if passed == len(rows) else f"; `python -m minineo.check NAME {path}` shows one in full"))
    return 0 if passed == len(rows) else FAILURE


def parser():
    lessons = "; ".join(f"{n}: {', '.join(e.name for e in EXERCISES.values() if e.lesson == n)}" for n in LESSONS)
    p = Parser(prog="python -m minineo.check",
               description="Check your implementation of one of GPT-Neo's layers against minineo's, on inputs "
                           "chosen to expose the usual mistakes; a mismatch names the mistake.",
               epilog=f"exercises by lesson: {lessons}")
    p.add_argument("name", metavar="NAME", help="the exercise (the function's name), or `all`")
    p.add_argument("file", metavar="FILE.py", help="your file, which defines a function called NAME")
    p.add_argument("--in-model", action="store_true",
                   help="also put your function into the bundled model and compare the held-out loss and "
                        "a few generated tokens with the reference's")
    return p


def main(argv=None):
    return run_command(run, parser().parse_args(argv))
