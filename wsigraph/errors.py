"""Exceptions raised by wsigraph.

Every error about user input names the file, row or key at fault, so that a message alone tells the
user what to fix. ``InputError`` subclasses ``ValueError`` so generic callers can still catch it.
"""
from __future__ import annotations


class WsigraphError(Exception):
    """Base class of every error wsigraph raises on purpose."""


class InputError(WsigraphError, ValueError):
    """Bad user input: a malformed file, row, key or value. The message names which."""


class MissingFileError(InputError, FileNotFoundError):
    """A file that the input names does not exist."""


class ConfigError(InputError):
    """A configuration key or value is unknown or of the wrong type."""


class MissingDependencyError(WsigraphError, ImportError):
    """An optional package is needed for the requested feature but is not installed."""
