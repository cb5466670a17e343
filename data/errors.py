"""Exceptions raised by the data package."""

from __future__ import annotations


class DataFileNotFoundError(FileNotFoundError, ValueError):
    """A dataset file or package that is not there.

    It is also a ValueError, so a caller that turns bad dataset arguments into
    usage errors catches it with the other invalid-value errors.
    """
