import numbers


class MinineoError(ValueError):
    """A user mistake (bad file, flag or input): the CLI prints it as one line, never a traceback."""


def is_int(value, low=None):  # an integer (not a bool, which Python counts as one), >= low if given
    return (isinstance(value, numbers.Integral) and not isinstance(value, bool)
            and (low is None or value >= low))
