"""Errors the user can act on. Each message names the file, row or field at fault."""


class InputError(ValueError):
    """Bad user input (spec, dataset, score file, model name).

    Raised before anything is written; the CLI prints the message without a traceback and exits 2.
    """
