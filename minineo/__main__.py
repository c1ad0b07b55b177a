"""`python -m minineo "prompt"`: see minineo/commands/generate.py."""
from .commands.generate import main

if __name__ == "__main__":
    raise SystemExit(main())
