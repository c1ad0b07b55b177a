"""Every ```python and ```bash snippet of the README and of each page in docs/ runs as written, the
way a reader would run it; and every link between those pages leads somewhere.

- A page's Python snippets run one after another in one fresh interpreter of their own, sharing their
  variables, as if pasted into one session in the page's order: each page stands on its own, as a
  reader who lands on it meets it. Each shell command line runs in bash, on its own.
- They run in a scratch directory, which is also their HOME, where `text.txt` (the text the
  perplexity snippets score, as a reader would have their own) holds the opening of The Tempest,
  the bundled model's held-out play.
- A model on the Hugging Face Hub (`-m 2.7B`, `--model owner/name`, `model="owner/name"`) is
  replaced by the bundled model when it is not in huggingface_hub's cache (this machine is offline),
  and the test prints each such change.
- `pip install ...` is skipped (the tests run in the installed environment), and so is
  `python -m pytest` (this very run).
- A snippet that cannot run offline or in seconds (a download, a server, a benchmark of minutes) is
  marked by this comment on the line before its fence, with the reason:
      <!-- not run by tests/test_readme.py: REASON -->
- A fence may be indented (inside a list item); its code is read without the indentation.
"""
import json
import os
import re
import subprocess
import sys
import textwrap
import tokenize
from io import StringIO
from pathlib import Path

import pytest

from minineo.weights import hub

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]   # the README, then every page it links to
SKIP_MARK = re.compile(r"<!-- not run by tests/test_readme\.py: (.+?) -->\s*$")
FENCE = re.compile(r"^( *)```(python|bash)\n(.*?)^\1```", re.S | re.M)
HUB_NAME = r"[A-Za-z0-9][\w.-]*/[\w.-]+|125M|1\.3B|2\.7B"
TEXT_CHARS = 1000   # text.txt: about 350 tokens, two or three windows of the bundled model's context


def name(page):  # "README.md", "docs/training.md"
    return page.relative_to(ROOT).as_posix()


def snippets(page=README):  # -> [(language, line of the fence, code, reason it is not run or None)]
    text = page.read_text(encoding="utf-8")
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP_MARK.search(before)
        code = textwrap.dedent(match.group(1) + match.group(3))
        found.append((match.group(2), line, code, skip.group(1) if skip else None))
    return found


def offline_hub_name(name):  # a Hub model that is not in huggingface_hub's local cache (None: it is there)
    if Path(name).exists():
        return False
    from huggingface_hub import try_to_load_from_cache
    return not isinstance(try_to_load_from_cache(hub.RELEASES.get(name, name), "config.json"), str)


def python_for_offline(code):  # -> (code, notes): Hub model names in string literals -> None (the bundled model)
    tokens = list(tokenize.generate_tokens(StringIO(code).readline))
    lines, notes = code.splitlines(keepends=True), []
    for token in reversed(tokens):
        value = token.string[1:-1] if token.type == tokenize.STRING else None
        if value is not None and re.fullmatch(HUB_NAME, value) and offline_hub_name(value):
            (row, start), (_, end) = token.start, token.end
            lines[row - 1] = lines[row - 1][:start] + "None" + lines[row - 1][end:]
            notes.append(f"{value!r} -> None (the bundled model)")
    return "".join(lines), notes


def shell_for_offline(line):  # -> (command or None, notes)
    notes, kept = [], []
    for part in line.split(" && "):
        if re.match(r"\s*pip install\b", part):
            notes.append(f"skipped {part.strip()!r}: the tests run in the installed environment")
        elif re.match(r"\s*python -m pytest\b", part):
            notes.append("skipped 'python -m pytest': this is that run")
        else:
            kept.append(part)

    def bundled(match):
        if not offline_hub_name(match.group("name")):
            return match.group(0)
        notes.append(f"{match.group(0).strip()!r} dropped: the bundled model instead (offline)")
        return ""
    command = re.sub(rf"\s(?:-m|--model)[ =](?P<name>{HUB_NAME})(?=\s|$)", bundled, " && ".join(kept))
    return (command if command.strip() else None), notes


def shell_lines():  # -> pytest params, one per command line of every bash snippet of every page
    params = []
    for page in PAGES:
        for language, line, code, skip in snippets(page):
            if language != "bash":
                continue
            for offset, command in enumerate(code.replace("\\\n", " ").splitlines()):
                command = command.strip()
                if command and not command.startswith("#"):
                    params.append(pytest.param(command, skip, id=f"{name(page)} line {line + 1 + offset}"))
    return params


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    directory = tmp_path_factory.mktemp("readme")
    tempest = (ROOT / "minineo" / "data" / "neo-shakespeare-heldout.txt").read_text()
    (directory / "text.txt").write_text(tempest[:TEXT_CHARS])
    return directory


@pytest.fixture(scope="module")
def env(scratch):  # the scratch directory is also HOME, so that a snippet writing to ~ writes there
    from huggingface_hub import constants
    return {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(scratch), "HF_HOME": constants.HF_HOME}


@pytest.mark.parametrize("command, skip", shell_lines())
def test_shell_snippet_runs(scratch, env, command, skip):
    if skip:
        print(f"not run ({skip}): {command}")
        return
    runnable, notes = shell_for_offline(command)
    print("\n".join([f"as written: {command}", *notes, f"ran: {runnable}"]))
    if runnable is None:
        return
    done = subprocess.run(["bash", "-c", runnable], capture_output=True, text=True, cwd=scratch, env=env,
                          timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and "Traceback" not in done.stderr, \
        f"`{runnable}` exited {done.returncode}\nstdout: {done.stdout[-2000:]}\nstderr: {done.stderr[-3000:]}"


RUN_BLOCKS = """
import json, sys, time, traceback
page, blocks = json.load(sys.stdin)
namespace = {"__name__": "__main__"}
for line, code in blocks:
    started = time.perf_counter()
    try:
        exec(compile(code, f"{page}, the snippet at line {line}", "exec"), namespace)
    except BaseException:
        traceback.print_exc()
        sys.exit(f"the snippet at {page} line {line} failed")
    print(f"{page} line {line}: {time.perf_counter() - started:.1f} s", file=sys.stderr)
"""


@pytest.mark.parametrize("page", [p for p in PAGES if any(s[0] == "python" for s in snippets(p))], ids=name)
def test_python_snippets_run_in_order(scratch, env, page):
    blocks, notes = [], []
    for language, line, code, skip in snippets(page):
        if language == "python" and skip:
            print(f"{name(page)} line {line}: not run ({skip})")
        elif language == "python":
            code, changed = python_for_offline(code)
            notes += [f"{name(page)} line {line}: {note}" for note in changed]
            blocks.append((line, code))
    print("\n".join(notes))
    assert blocks, f"every python snippet of {name(page)} is marked not to run"
    done = subprocess.run([sys.executable, "-c", RUN_BLOCKS], input=json.dumps([name(page), blocks]),
                          capture_output=True, text=True, cwd=scratch, env=env, timeout=300)
    print(done.stderr[-4000:])
    assert done.returncode == 0, f"{done.stderr[-4000:]}"


def test_the_readme_and_the_pages_have_snippets():   # so that a change of fences cannot empty the tests above
    assert any(s[0] == "python" for s in snippets(README)) and any(s[0] == "bash" for s in snippets(README))
    assert len(PAGES) > 1 and sum(len(snippets(p)) for p in PAGES[1:]) >= 10, PAGES


def test_the_offline_rewrites():   # the rules above, checked on lines like the README's
    assert shell_for_offline('pip install -e . && python -m minineo "ROMEO."')[0] == 'python -m minineo "ROMEO."'
    assert shell_for_offline('pip install -e ".[test]" && python -m pytest')[0] is None
    command, notes = shell_for_offline('python -m minineo -m 1.3B -n 200 "The meaning of life is"')
    assert command == 'python -m minineo -n 200 "The meaning of life is"' and len(notes) == 1
    assert shell_for_offline("python -m minineo -m ./my-model Hi")[0] == "python -m minineo -m ./my-model Hi"
    code, notes = python_for_offline('g = pipeline("text-generation", model="EleutherAI/gpt-neo-2.7B")  # "125M"\n')
    assert code == 'g = pipeline("text-generation", model=None)  # "125M"\n' and len(notes) == 1
    marked = [(name(page), *s) for page in PAGES for s in snippets(page) if s[3]]
    print("marked not to run:", [(page, language, line, reason) for page, language, line, _, reason in marked])
    assert all(reason.strip() for *_, reason in marked)
    indented = list(FENCE.finditer("- a list item:\n  ```bash\n  echo hi\n  ```\n"))
    assert [(m.group(2), textwrap.dedent(m.group(1) + m.group(3))) for m in indented] == [("bash", "echo hi\n")]


# --- the links between the README and docs/ --------------------------------------------------------

LINK = re.compile(r"\]\(([^)\s]+)\)")


def anchors(page):  # the GitHub anchors of a page's headings: "## Names, paths and offline use" -> names-paths-and-offline-use
    text = re.sub(r"^ *```.*?^ *```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M)   # not a "# comment"
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#{1,6} (.+)$", text, re.M)}


def test_every_link_leads_to_a_page_and_a_heading_that_exist():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+:", target):   # https://..., mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            if not linked.exists():
                broken.append(f"{name(page)}: {target} (no such file)")
            elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{name(page)}: {target} (no heading #{anchor} in {linked.name})")
    assert not broken, "\n".join(broken)


def test_the_readme_links_every_page_of_docs():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in LINK.findall(README.read_text())}
    missing = [name(page) for page in PAGES[1:] if page.resolve() not in linked]
    assert not missing, f"pages of docs/ the README does not link to: {missing}"
    assert len(README.read_text().splitlines()) <= 300, "the README is a front door: at most 300 lines"


def test_the_anchor_rule(tmp_path):   # GitHub's: lower case, punctuation dropped, spaces to hyphens
    page = tmp_path / "page.md"
    page.write_text("# Evaluation: lm-eval's tasks\n\n## Names, paths and offline use\n```bash\n# not a heading\n```\n")
    assert anchors(page) == {"evaluation-lm-evals-tasks", "names-paths-and-offline-use"}
