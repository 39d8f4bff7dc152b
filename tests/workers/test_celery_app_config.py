"""The Celery app is torch-free and configured for doorbells: late acks, one message at a time, a queue per task."""
from __future__ import annotations

import subprocess
import sys

from workers.celery_app import RUN_QUEUE_TASK, make_celery
from workers.config import WorkerSettings, all_queues


def test_reliability_settings():
    app = make_celery(WorkerSettings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout_seconds=7200,
                                     lease_seconds=120))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert [queue.name for queue in conf.task_queues] == ["lensq.caption", "lensq.vqa", "lensq.sentiment",
                                                          "lensq.classify"]
    assert conf.broker_transport_options["visibility_timeout"] > 120


def test_embedded_broker_takes_no_redis_options():
    app = make_celery(WorkerSettings(broker_url="sqla+sqlite:///broker.db"))
    assert app.conf.broker_transport_options == {}


def test_queue_prefix_setting():
    assert all_queues(WorkerSettings(queue_prefix="gpu")) == ["gpu.caption", "gpu.vqa", "gpu.sentiment", "gpu.classify"]


def test_app_and_tasks_module_import_without_torch():
    code = ("import sys, workers.celery_app, workers.tasks; "
            "assert 'torch' not in sys.modules and 'multimodal' not in sys.modules; "
            f"assert '{RUN_QUEUE_TASK}' in workers.celery_app.app.tasks")
    subprocess.run([sys.executable, "-c", code], check=True)
