"""A student's workspace: the stub file and the exercise notebooks, copied into a folder they own."""
import shutil
from pathlib import Path

from ..errors import MinineoError
from .pages import NOTEBOOKS

STUBS = Path(__file__).resolve().parent / "neo_exercises.py"


def exercise_notebooks():
    return sorted((NOTEBOOKS / "exercises").glob("*.ipynb"))


def set_up(folder):  # -> the files written; never overwrites a student's work
    folder = Path(folder)
    notebooks = exercise_notebooks()
    if not notebooks:
        raise MinineoError(f"the exercise notebooks are not in this installation ({NOTEBOOKS / 'exercises'}); "
                           "install minineo from a clone of its repository (pip install -e .)")
    sources = [STUBS, *notebooks]
    existing = [folder / s.name for s in sources if (folder / s.name).exists()]
    if existing:
        raise MinineoError(f"{folder}: already holds {', '.join(p.name for p in existing)}; "
                           "choose a new folder (nothing was copied, so nobody's work is overwritten)")
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(source, folder / source.name)) for source in sources]
