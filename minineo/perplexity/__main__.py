"""python -m minineo.perplexity FILE: see minineo/commands/perplexity.py."""
from ..commands.perplexity import main

raise SystemExit(main())
