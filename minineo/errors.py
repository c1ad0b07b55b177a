class MinineoError(ValueError):
    """A user mistake (bad file, flag or input): the CLI prints it as one line, never a traceback."""
