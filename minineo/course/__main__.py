"""python -m minineo.course setup DIR | pages OUT: see minineo/commands/course.py."""
from ..commands.course import main

raise SystemExit(main())
