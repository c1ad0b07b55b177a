"""python -m minineo.bench: see minineo/commands/bench.py."""
from .commands.bench import main

if __name__ == "__main__":
    raise SystemExit(main())
