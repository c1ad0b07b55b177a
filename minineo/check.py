"""python -m minineo.check NAME FILE.py: see minineo/commands/check.py."""
from .commands.check import main

if __name__ == "__main__":
    raise SystemExit(main())
