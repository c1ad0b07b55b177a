"""python -m minineo.calibrate: see minineo/commands/calibrate.py."""
from .commands.calibrate import main

if __name__ == "__main__":
    raise SystemExit(main())
