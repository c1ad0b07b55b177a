"""Remove outputs from notebooks, so that they are committed as code and prose only.

    python scripts/strip_notebooks.py            # strip every notebooks/*.ipynb in place
    python scripts/strip_notebooks.py --check    # exit 1 and name the notebooks that need it
    python scripts/strip_notebooks.py a.ipynb    # only these files

Clears each code cell's outputs and execution count and the per-cell run metadata Jupyter adds,
and keeps only the kernel's name in the notebook's metadata. Standard library only; the file is
written as Jupyter writes it (indent 1, sorted keys), so a stripped notebook diffs cleanly.
"""
import argparse
import json
import sys
from pathlib import Path

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
RUN_METADATA = ("execution", "collapsed", "scrolled", "ExecuteTime")


def strip(nb):  # notebook dict, changed in place
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
        for key in RUN_METADATA:
            cell.get("metadata", {}).pop(key, None)
    meta = nb.setdefault("metadata", {})
    meta.pop("widgets", None)
    if "language_info" in meta:
        meta["language_info"] = {"name": meta["language_info"].get("name", "python")}
    return nb


def dumps(nb):
    return json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False, separators=(",", ": ")) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if any notebook has outputs")
    args = parser.parse_args(argv)
    dirty = []
    for path in args.paths or sorted(NOTEBOOKS.glob("*.ipynb")):
        text = path.read_text(encoding="utf-8")
        stripped = dumps(strip(json.loads(text)))
        if stripped != text:
            dirty.append(path)
            if not args.check:
                path.write_text(stripped, encoding="utf-8")
    for path in dirty:
        print(f"{path}: {'has outputs' if args.check else 'stripped'}")
    return 1 if args.check and dirty else 0


if __name__ == "__main__":
    sys.exit(main())
