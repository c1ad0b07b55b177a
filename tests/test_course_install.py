"""The course's two install lines (docs/teaching.md, and the README's teaching section), run as a reader
runs them, in a fresh virtual environment that sees nothing installed outside it: a student's line
first, then an instructor's on top of it in the same venv (one venv: the second line adds to the first,
which keeps this to one set of downloads). After the student's line a workspace is set up and checked,
the notebooks' imports work and lm-eval is absent; after the instructor's, an exercise page builds.
It prints each line's time and the venv's size after each."""
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parent.parent
TEACHING = ROOT / "docs" / "teaching.md"
README = ROOT / "README.md"
LINE = re.compile(r'^(pip install -e "\.\[[\w,]+\]")\s+# (a student|an instructor)', re.M)


def install_lines():  # -> {"a student": line, "an instructor": line}, as docs/teaching.md gives them
    return {who: line for line, who in LINE.findall(TEACHING.read_text(encoding="utf-8"))}


def test_the_docs_give_one_line_for_each():
    lines = install_lines()
    assert sorted(lines) == ["a student", "an instructor"], lines
    readme = README.read_text(encoding="utf-8")
    assert all(line in readme for line in lines.values()), "the README's teaching section gives the same two lines"
    assert "pages" not in lines["a student"]   # the student's install brings no lm-eval (pages' extra has it)


def size(folder):  # bytes on disk
    return sum(p.lstat().st_size for p in Path(folder).rglob("*") if p.is_file() and not p.is_symlink())


def test_the_install_lines_work_in_a_fresh_venv(tmp_path):
    lines = install_lines()
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PIP_USER")}
    env.update(VIRTUAL_ENV=str(venv), PATH=os.pathsep.join([str(bin_dir), env.get("PATH", "")]))

    def run(command, **kwargs):
        done = subprocess.run(command, cwd=kwargs.pop("cwd", ROOT), env=env, capture_output=True, text=True,
                              shell=isinstance(command, str), timeout=kwargs.pop("timeout", 900), **kwargs)
        print(f"$ {command if isinstance(command, str) else ' '.join(map(str, command))} -> {done.returncode}")
        return done

    def install(line):
        start = time.perf_counter()
        done = run(line + " --quiet --disable-pip-version-check")
        seconds = time.perf_counter() - start
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        print(f"{line}: {seconds:.0f} s, the venv now {size(venv) / 2**20:.0f} MiB")

    install(lines["a student"])
    found = run([python, "-c", "import minineo, matplotlib, jupyterlab, ipykernel; print(minineo.__file__)"])
    assert found.returncode == 0 and str(ROOT) in found.stdout, found.stderr   # this checkout, editable
    assert run([python, "-c", "import lm_eval"]).returncode != 0, "a student's install pulled lm-eval"
    work = tmp_path / "class"
    assert run([python, "-m", "minineo.course", "setup", work]).returncode == 0
    stub = run([python, "-m", "minineo.check", "layer_norm", work / "neo_exercises.py"])
    assert stub.returncode == 1 and "not written yet" in stub.stdout, stub.stdout + stub.stderr

    install(lines["an instructor"])
    assert run([python, "-c", "import lm_eval, nbconvert, latex2mathml"]).returncode == 0
    site = tmp_path / "site"
    built = run([python, "-m", "minineo.course", "pages", site, ROOT / "notebooks" / "exercises" / "2_layer_norm.ipynb"])
    assert built.returncode == 0 and (site / "exercises" / "2_layer_norm.html").is_file(), built.stderr[-3000:]
    shutil.rmtree(venv, ignore_errors=True)
