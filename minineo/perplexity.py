"""python -m minineo.perplexity FILE: see minineo/commands/perplexity.py. (The function is
minineo.text_perplexity, in minineo/text/sliding_window.py.)"""
from .commands.perplexity import main

if __name__ == "__main__":
    raise SystemExit(main())
