"""User-facing errors.

Anything a user can cause (bad files, bad config, mismatched artefacts) raises
:class:`MultirecError` with a one-line message that names the file, row or key and
says what to do. Entry points print that line instead of a traceback.
"""

from __future__ import annotations


class MultirecError(Exception):
    """An error caused by input or configuration, reported as one line."""


class DataError(MultirecError):
    """Raw or prepared data is missing, malformed or inconsistent."""


class ConfigError(MultirecError):
    """A configuration key or value is unknown or invalid."""


class ArtefactMismatchError(MultirecError):
    """Two artefacts (dataset, cache, checkpoint) were built from different inputs."""
