"""Starting Ray for a hetrec entry point, with a terminal a person can read.

Entry points (the CLI, the demo, the pipeline job, benchmarks) call :func:`init_ray` once;
library code only checks ``ray.is_initialized()``. By default Ray's own log lines (Ray
Core, Ray Data's execution plans and progress blocks, Ray Train, Ray Serve) do not reach
the terminal: they still go to the session's log files under
``/tmp/ray/session_latest/logs``. ``HETREC_LOG_LEVEL=INFO`` (or ``hetrec --verbose``)
brings them back at that level.
"""

from __future__ import annotations

import logging
import os

import ray

from graphs.exceptions import ConfigError

# Loggers whose console handlers Ray configures itself (file handlers are left alone).
RAY_LOGGERS = ("ray", "ray.data", "ray.train", "ray.tune", "ray.serve")
QUIET_LEVEL = logging.ERROR


def ray_console_level(verbose: bool = False) -> int:
    """The level Ray's console output runs at: ``HETREC_LOG_LEVEL`` if set, INFO with
    ``verbose``, else ERROR (only failures)."""
    name = os.environ.get("HETREC_LOG_LEVEL", "").strip().upper()
    if name:
        level = logging.getLevelName(name)
        if not isinstance(level, int):
            raise ConfigError(f"HETREC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {name!r}")
        return level
    return logging.INFO if verbose else QUIET_LEVEL


def quiet_ray_console(level: int) -> None:
    """Raise the console handlers of Ray's loggers to ``level`` and turn Ray Data's progress
    bars off below INFO. Idempotent; call again after Ray Data is imported."""
    import ray.data  # noqa: F401  (importing these configures their loggers' handlers,
    import ray.serve  # noqa: F401   which are adjusted below)

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    for name in RAY_LOGGERS:
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(level)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = level <= logging.INFO
    ctx.enable_operator_progress_bars = level <= logging.INFO
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = level <= logging.INFO


def init_ray(address: str | None = None, verbose: bool = False, **kwargs) -> None:
    """``ray.init`` unless Ray is up already, with Ray's console output at
    :func:`ray_console_level`. ``kwargs`` go to ``ray.init`` (e.g. ``num_cpus``)."""
    level = ray_console_level(verbose)
    quiet_ray_console(level)
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=level <= logging.INFO, logging_level=max(level, logging.INFO),
                 **kwargs)
    quiet_ray_console(level)        # ray.init reconfigures the "ray" logger's handlers
