"""python -m minineo.eval --task wikitext|lambada|pile: see minineo/commands/evaluate.py."""
from .commands.evaluate import main

if __name__ == "__main__":
    raise SystemExit(main())
