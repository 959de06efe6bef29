"""Logging for the pipeline's job scripts: library log records and warnings go to the rule's log file."""

from __future__ import annotations

import contextlib
import logging
import sys
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
