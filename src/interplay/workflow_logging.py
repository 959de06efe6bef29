"""Logging for the pipeline's job scripts: library log records and warnings go to the rule's log file;
library functions that take a `log` argument (a logger or a file path) write to it with `log_line`."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def log_to(path: str | None, level: int = logging.INFO) -> Iterator[logging.Logger]:
    """Send the `interplay` logger (and Python warnings) to `path` and stderr for the duration of a job."""
    logger = logging.getLogger("interplay")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if path:
        handlers.append(logging.FileHandler(path))
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for handler in handlers:
        handler.setFormatter(formatter)
        logger.addHandler(handler)
    logger.setLevel(level)
    logging.captureWarnings(True)
    logging.getLogger("py.warnings").handlers = handlers
    try:
        yield logger
    except Exception:
        logger.exception("job failed")
        raise
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def log_line(log: logging.Logger | str | os.PathLike | None, message: str, *,
             default: logging.Logger | None = None, level: int = logging.INFO) -> None:
    """Log one `message` to `log`: a logger, a file path (a timestamped line appended), or None (the
    `default` logger, else the `interplay` logger)."""
    if log is None or isinstance(log, logging.Logger):
        (log or default or logging.getLogger("interplay")).log(level, message)
    else:
        with open(log, "a") as fh:
            fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
