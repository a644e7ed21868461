"""One exception type for bad input; the CLI turns it into a one-line message and exit code 2."""

from __future__ import annotations

from pathlib import Path


class LabelfieldError(Exception):
    """Bad input or an impossible request. The message is one line and names the file when there is one."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
