"""Helpers shared by the test apps (not an app itself)."""

import os


def first_time(path):
    """True for the first process to get here (creates ``path``), False for later ones."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True
