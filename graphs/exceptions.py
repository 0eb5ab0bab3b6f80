"""Errors raised by hetrec. The CLI catches :class:`HetrecError` once and prints one line."""


class HetrecError(Exception):
    """Base class of every error hetrec raises on purpose (bad input, bad config)."""


class GraphFormatError(HetrecError, ValueError):
    """A graph directory, partitioned graph or source file breaks its contract.

    The message names the file, the column and the first bad row where they apply.
    """


class DataSourceError(HetrecError):
    """Source data (MovieLens files, the recbole wheel) could not be found or read."""
