"""The errors the readers raise, in a module of their own so that every reader (files, HTTP) can
import them without importing each other."""
from __future__ import annotations


class BadInputFile(Exception):
    """A whole input cannot be read; ``str(e)`` names it, says what went wrong and what to do.

    Records yielded before the error stay valid.
    """

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path


class CorruptStream(Exception):
    """Raised inside a byte chain; the readers turn it into ``BadInputFile`` with the line."""
