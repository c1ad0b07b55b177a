"""`python -m minineo "prompt"`: see minineo/commands/generate.py."""
from .commands.generate import main

raise SystemExit(main())
