"""The errors of stage 1, in a module of their own so that every part of it (readers of files and
HTTP, the build and its books) can import them without importing each other."""
from __future__ import annotations

from shards import PipelineError

RE_DOWNLOAD = "re-download it, or pass --skip-bad-files to go on without it"


class BadInputFile(PipelineError):
    """A whole input cannot be read. ``str(e)`` is ``PATH: PROBLEM; REMEDY``: it names the input, says
    what went wrong and what to do; ``problem`` alone is what a build that goes on without the file
    (``--skip-bad-files``) reports.

    Records yielded before the error stay valid as far as the reader can tell (a build trusts those of a
    compressed input only up to its last checked member).
    """

    def __init__(self, path: str, problem: str, remedy: str | None = RE_DOWNLOAD):
        super().__init__(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))
        self.path = path
        self.problem = problem
        self.remedy = remedy


class CorruptStream(Exception):
    """Raised inside a byte chain; the readers turn it into ``BadInputFile`` with the line."""


class BuildError(PipelineError):
    """A build problem the user can act on; the message says what to do."""
