"""`python -m minineo "prompt"`: see minineo/cli.py."""
from .cli import main

raise SystemExit(main())
