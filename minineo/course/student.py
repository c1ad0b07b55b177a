"""Importing a student's file, with their own mistakes shown as their own lines."""
import difflib
import importlib.util
import sys
import traceback
from pathlib import Path

from ..errors import UsageError   # how the checker was called (exit 2), not the student's function (exit 1)
from .exercises import EXERCISES


def exercise_named(name):
    if name in EXERCISES:
        return EXERCISES[name]
    close = difflib.get_close_matches(name, EXERCISES, n=1, cutoff=0.5) or \
        [n for n in EXERCISES if n.lower() == name.lower()]
    hint = f"; did you mean {close[0]}?" if close else ""
    raise UsageError(f"no exercise called {name!r}{hint} The exercises: {', '.join(EXERCISES)}")


def load_file(path):  # the student's file as a module; their syntax or import error as one message
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    spec = importlib.util.spec_from_file_location(f"student_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))   # so that their file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as error:
        pointer = "" if error.offset is None else "\n    " + " " * (error.offset - 1) + "^"
        raise UsageError(f"{path}, line {error.lineno}: SyntaxError: {error.msg}\n    "
                         f"{(error.text or '').rstrip()}{pointer}") from None
    except Exception as error:
        frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).resolve() == path.resolve()]
        where = f", line {frames[-1].lineno}: {frames[-1].line.strip()}" if frames else ""
        raise UsageError(f"{path}{where}\n    importing your file failed: {type(error).__name__}: {error}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def function_in(module, path, name):  # the student's function `name`, or a UsageError listing what is there
    fn = getattr(module, name, None)
    if fn is None or not callable(fn):
        defined = [n for n, v in vars(module).items() if callable(v) and getattr(v, "__module__", None) == module.__name__]
        close = difflib.get_close_matches(name, defined, n=1)
        raise UsageError(f"{path} has no function {name!r}" + (f" (did you mean {close[0]}?)" if close else "")
                         + (f"; it defines {', '.join(defined)}" if defined else ""))
    return fn
