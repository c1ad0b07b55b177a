"""python -m minineo.train.bench: see minineo/commands/train_bench.py."""
from ..commands.train_bench import main

if __name__ == "__main__":
    raise SystemExit(main())
