"""python -m minineo.check NAME FILE.py: see minineo/commands/check.py."""
from ..commands.check import main

raise SystemExit(main())
