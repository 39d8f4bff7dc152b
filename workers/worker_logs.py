"""A worker's log lines: Celery's handlers get the JSON formatter when LENSQ_LOG_FORMAT=json, and a redacting filter."""
from __future__ import annotations

import logging

from celery import signals

from db.structured_logs import RedactingFilter, make_formatter
from workers.config import WorkerSettings


def _adopt_handlers(logger: logging.Logger) -> None:
    """Celery set up `logger`'s handlers: JSON lines replace its text format if asked, and nothing secret gets out."""
    log_format = WorkerSettings().log_format
    for handler in logger.handlers:
        if log_format == "json":
            handler.setFormatter(make_formatter("json"))
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


@signals.after_setup_logger.connect
def format_worker_logs(logger: logging.Logger, **_kwargs) -> None:
    _adopt_handlers(logger)


@signals.after_setup_task_logger.connect
def format_task_logs(logger: logging.Logger, **_kwargs) -> None:
    _adopt_handlers(logger)


@signals.celeryd_after_setup.connect
def no_banner_in_json(instance=None, **_kwargs) -> None:
    """Celery's start-up banner is ASCII art on stdout, not a log line: a JSON log goes without it."""
    if instance is not None and WorkerSettings().log_format == "json":
        instance.quiet = True


@signals.worker_process_init.connect
def library_output_as_json(**_kwargs) -> None:
    """Connected before the model loads (workers.tasks imports this module first): Python's warnings and
    transformers' messages become log records, and its progress bars are off, so stderr holds only JSON lines."""
    if WorkerSettings().log_format != "json":
        return
    logging.captureWarnings(True)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_default_handler()
    transformers_logging.enable_propagation()
    transformers_logging.disable_progress_bar()
