"""minineo's one exception family. Every check of what a user gives (a file, a flag, an argument)
raises MinineoError with one line naming what was wrong and what was expected; the commands print it
as `minineo: error: ...` and exit 1, or 2 for a UsageError (see minineo/commands/common.py).
Anything else that escapes is a bug in minineo and keeps its traceback."""
import numbers


class MinineoError(ValueError):
    """A user mistake (bad file, flag or input): the CLI prints it as one line, never a traceback.
    A ValueError, so that code written for `except ValueError` still catches it."""


class UsageError(MinineoError):
    """A command called wrongly in a way its parser cannot see (two flags that exclude each other): exit 2."""


def is_int(value, low=None):  # an integer (not a bool, which Python counts as one), >= low if given
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and (low is None or value >= low))
