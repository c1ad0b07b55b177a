"""The course kit: exercises for every layer of GPT-Neo, checked against minineo's own functions.

    exercises/       for each exercise, one file per lesson: the reference, the inputs that expose mistakes, the known mistakes
    checker.py       a student's function against the reference, the mistake named
    in_model.py      a student's function inside the bundled model: held-out loss and generated text
    student.py       importing a student's file, their errors shown as their lines; earlier lessons' functions
    isolated.py      the student's code in a child process: a time limit per case, exits and crashes named
    neo_exercises.py the stub file a student fills in (copied into their workspace)
    workspace.py     the workspace an instructor hands out; pages.py, the notebooks as HTML pages

From a notebook: `check("layer_norm", layer_norm)` and `in_model("layer_norm", layer_norm)` print
the same reports as `python -m minineo.check layer_norm FILE.py [--in-model]`; `earlier("layer_norm")`
brings a function of an earlier lesson from the student's neo_exercises.py (minineo's while theirs is a stub).
"""
from .checker import check as _check
from .student import earlier, exercise_named


def check(name, fn):  # prints the report: OK and what was checked, or where fn differs and the mistake named
    print("\n".join(_check(exercise_named(name), fn).lines))


def in_model(name, fn):  # prints the held-out loss and generated text with fn in the bundled model
    from .in_model import in_model as run
    exercise = exercise_named(name)
    print("\n".join(run(exercise, fn)) if exercise.in_model else
          f"{name} is not a part of the model, it looks into one: in_model does not apply")
