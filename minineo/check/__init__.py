"""python -m minineo.check: see minineo/commands/check.py."""
