"""python -m minineo.quantize SRC DST: see minineo/commands/quantize.py."""
from .commands.quantize import main

if __name__ == "__main__":
    raise SystemExit(main())
