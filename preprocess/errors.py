"""The errors of stage 1, in a module of their own so that every part of it (readers of files and
HTTP, the build and its books) can import them without importing each other. Each derives from
``shards.PipelineError``, the one class the command line catches."""
from __future__ import annotations

from shards import PipelineError

RE_DOWNLOAD = "re-download it, or pass --skip-bad-files to go on without it"


class InputError(PipelineError):
    """What the user named as input cannot be resolved into input files (no such path, an unknown
    file type, an empty input list, a malformed ``hf:`` spec); the message says what to do."""


class BadInputFile(PipelineError):
    """A whole input cannot be read. ``str(e)`` is ``PATH: PROBLEM; REMEDY``: it names the input, says
    what went wrong and what to do; ``problem`` alone is what a build that goes on without the file
    (``--skip-bad-files``) reports. ``damaged``: the file's data is broken (truncated, corrupt), so a
    complete copy of it is the cure; other bad inputs (an empty file, a missing column, an HTML page
    instead of data) are not copies gone wrong, and their remedy says what to do instead.

    Records yielded before the error stay valid as far as the reader can tell (a build trusts those of a
    compressed input only up to its last checked member).
    """

    def __init__(self, path: str, problem: str, remedy: str | None = RE_DOWNLOAD, damaged: bool = False):
        super().__init__(f"{path}: {problem}" + (f"; {remedy}" if remedy else ""))
        self.path = path
        self.problem = problem
        self.remedy = remedy
        self.damaged = damaged


class ChangedInput(BadInputFile):
    """A URL's file changed on the server while it was read (its size, ETag or Last-Modified, or the
    bytes at the point where a request continued, differ from what was fetched before). What was read
    of it cannot be continued: it is read again from its start, never spliced."""


class DownloadFailed(PipelineError):
    """A URL did not give its bytes within the network patience (outages, resets, stalls). Not a bad
    file: nothing is recorded against it, and the next run of the same command retries it."""

    def __init__(self, url: str, problem: str, remedy: str):
        super().__init__(f"{url}: {problem}; {remedy}")
        self.path = url
        self.problem = problem


class CorruptStream(Exception):
    """Raised inside a byte chain; the readers turn it into ``BadInputFile`` with the line. ``damaged``:
    broken data (truncated, a failed check), not data of another kind (an HTML page, an empty file)."""

    def __init__(self, message: str, damaged: bool = True):
        super().__init__(message)
        self.damaged = damaged


class BuildError(PipelineError):
    """A build problem the user can act on; the message says what to do."""
