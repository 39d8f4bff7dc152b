"""The Celery app is torch-free and configured for doorbells: late acks, one message at a time, bounded, handed back."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from services.processes import worker_command
from workers.celery_app import RUN_QUEUE_TASK, make_celery
from workers.config import WorkerSettings, all_queues, message_time_limit

ROOT = Path(__file__).resolve().parents[2]


def test_reliability_settings():
    app = make_celery(WorkerSettings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout_seconds=7200,
                                     lease_seconds=120, job_time_limit_seconds=60, batch_size=16))
    conf = app.conf
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert (conf.worker_pool, conf.worker_concurrency) == ("solo", 1)
    assert [queue.name for queue in conf.task_queues] == ["lensq.caption", "lensq.vqa", "lensq.sentiment",
                                                          "lensq.classify"]
    assert conf.broker_transport_options["visibility_timeout"] == 7200


def test_time_limits_stay_below_the_visibility_timeout():
    settings = WorkerSettings(broker_url="redis://127.0.0.1:6379/0", visibility_timeout_seconds=7200,
                              job_time_limit_seconds=60, time_limit_grace_seconds=10, batch_size=16,
                              message_soft_time_limit_seconds=600)
    conf = make_celery(settings).conf
    # One batch at worst: its batched call, then each of its 16 jobs alone, each cut off at 60s + 10s of grace.
    assert conf.task_time_limit == message_time_limit(settings) == 600 + 17 * 70 + 10
    assert conf.task_soft_time_limit == 600 < conf.task_time_limit < 7200


def test_settings_refuse_a_message_that_could_outlive_the_visibility_timeout():
    with pytest.raises(ValidationError, match="visibility timeout"):
        WorkerSettings(visibility_timeout_seconds=3600, job_time_limit_seconds=300, batch_size=32)


def test_shutdown_settings():
    conf = make_celery(WorkerSettings()).conf
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    # SIGTERM is the warm shutdown (see the SIGTERM test with real workers); a solo worker takes no soft wait.
    assert conf.worker_soft_shutdown_timeout == 0
    assert conf.worker_enable_soft_shutdown_on_idle is False
    assert make_celery(WorkerSettings(soft_shutdown_seconds=45)).conf.worker_soft_shutdown_timeout == 45


def test_worker_command_runs_one_solo_process():
    command = worker_command(name="w@test")
    assert command[command.index("-P") + 1] == "solo"


def test_compose_redis_keeps_doorbells():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    redis = compose["services"]["redis"]
    command = redis["command"]
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(volume.endswith(":/data") for volume in redis["volumes"]) and "redisdata" in compose["volumes"]


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


def test_a_worker_freezes_its_start_up_objects_once_the_model_is_loaded(monkeypatch):
    """workers.tasks.load_model (Celery's worker_process_init) loads the model, then takes everything allocated so
    far out of the garbage collector's view: a full collection walked about 560,000 objects, in about 200 ms, on the
    model's thread."""
    import gc

    from workers import model, tasks

    monkeypatch.setenv("LENSQ_MODEL", "lensq-tiny")
    monkeypatch.setenv("LENSQ_DEVICE", "cpu")
    monkeypatch.setattr(model, "_pipeline", None)  # restored after the test: no other test sees this load
    gc.unfreeze()
    try:
        tasks.load_model()
        assert model._pipeline is not None
        assert gc.get_freeze_count() > 100_000
    finally:
        gc.unfreeze()
