"""The errors hetrec raises on purpose, all under :class:`HetrecError`.

Library code raises them with the bad value and what was expected; the CLI turns exactly
these (and click's own usage errors) into a one-line message and exit code 1, so any other
exception is a bug and keeps its traceback. They live in ``graphs/``, the package every
other one may import. Each also derives from the built-in error a caller would expect
(``ValueError`` for a bad value, ``FileExistsError`` for an existing output...), so
``except ValueError`` keeps working.
"""


def require_positive_ints(config: object, *names: str) -> None:
    """Raise :class:`ConfigError` naming ``<Config>.<field>`` and the value unless each of
    ``config``'s fields ``names`` is an int >= 1 (a bool is not)."""
    for name in names:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{type(config).__name__}.{name} must be an int >= 1, got {value!r}")


class HetrecError(Exception):
    """Base class of every error hetrec raises on purpose (bad input, bad config)."""


class ConfigError(HetrecError, ValueError):
    """A parameter or configuration value is out of range or inconsistent; the message
    names it, gives the bad value and says what is accepted."""


class GraphFormatError(HetrecError, ValueError):
    """A graph directory, partitioned graph or source file breaks its contract.

    The message names the file, the column and the first bad row where they apply.
    """


class DataSourceError(HetrecError):
    """Source data (MovieLens files, the recbole wheel) could not be found or read."""


class EventError(HetrecError, ValueError):
    """A graph-change event is malformed or refers to something that does not exist.
    ``index``: the event's position in its batch, when known; ``message``: what is wrong."""

    def __init__(self, message: str, index: int | None = None):
        super().__init__(message if index is None else f"event {index}: {message}")
        self.index, self.message = index, message


class RunDirError(HetrecError):
    """A run directory does not hold what a step needs (no run, a run of another graph, an
    event log another process writes); the message says which command produces it."""


class NotFoundError(HetrecError, FileNotFoundError):
    """A file or folder the call names, or an input an earlier step produces (a checkpoint,
    embeddings, a ranker), does not exist; the message says which command makes it."""


class OutputExistsError(HetrecError, FileExistsError):
    """An output folder exists already and the call did not ask to replace or resume it."""


class ClusterError(HetrecError, RuntimeError):
    """A Ray cluster, job or Serve operation failed (not reachable, refused, timed out)."""
