"""The error of bad input, shared by every layer (the CLI turns it into one line and exit 2)."""


class InputError(Exception):
    """Bad input (a key, a value, a file). The message is one line naming what is wrong."""
