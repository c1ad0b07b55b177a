"""python -m minineo.course setup DIR | pages OUT: see minineo/commands/course.py."""
from ..commands.course import main

if __name__ == "__main__":
    raise SystemExit(main())
