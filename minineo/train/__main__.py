"""python -m minineo.train --data FILE.txt --out DIR: see minineo/commands/train.py."""
from ..commands.train import main

if __name__ == "__main__":
    raise SystemExit(main())
