"""The API's doorbell: every committed job is rung for, and a stream of commits costs few broker messages."""
from __future__ import annotations

import threading
import time

import redis

from image_factory import data_url, shape_png
from polling import wait_until
from services import submission
from workers.celery_app import PENDING_RING_SECONDS


def _recording_rings(monkeypatch) -> list[dict[str, int]]:
    rings: list[dict[str, int]] = []
    lock = threading.Lock()

    def record(queue_counts: dict[str, int]) -> None:  # in place of the broker: what would be sent, and when
        with lock:
            rings.append(dict(queue_counts))

    monkeypatch.setattr(submission, "ring_for_new_jobs", record)
    return rings


def _wait_for_jobs(rings: list[dict[str, int]], queue: str, count: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while sum(ring.get(queue, 0) for ring in rings) < count and time.monotonic() < deadline:
        time.sleep(0.005)


def test_a_stream_of_commits_is_rung_for_in_few_messages_and_none_is_lost(monkeypatch):
    rings = _recording_rings(monkeypatch)
    doorbell = submission.Doorbell(interval=0.05)
    for _ in range(200):  # 200 single jobs committed about 1 ms apart, some to a second queue
        doorbell.ring({"lensq.caption": 1})
        time.sleep(0.001)
    doorbell.ring({"lensq.vqa": 3})
    _wait_for_jobs(rings, "lensq.caption", 200)
    _wait_for_jobs(rings, "lensq.vqa", 3)
    assert sum(ring.get("lensq.caption", 0) for ring in rings) == 200
    assert sum(ring.get("lensq.vqa", 0) for ring in rings) == 3
    # One ring per 50 ms interval at most (the stream lasts at least 200 ms): not one per job.
    assert len(rings) < 50


def test_a_lone_job_after_a_quiet_spell_is_rung_for_at_once(monkeypatch):
    rings = _recording_rings(monkeypatch)
    doorbell = submission.Doorbell(interval=0.5)
    doorbell.ring({"lensq.caption": 1})
    _wait_for_jobs(rings, "lensq.caption", 1)
    time.sleep(0.6)  # longer than the interval: the next job finds no ring lately
    rung = len(rings)
    doorbell.ring({"lensq.caption": 1})
    _wait_for_jobs(rings, "lensq.caption", 2, timeout=0.25)  # not held back for an interval
    assert len(rings) == rung + 1 and rings[-1] == {"lensq.caption": 1}


def test_single_jobs_waiting_for_a_worker_share_one_doorbell(start_api, make_tenant, redis_url):
    """While a ring waits in the broker, the jobs committed after it are claimed by the worker it wakes: the API
    sends no other ring for them (workers.celery_app.PendingRings), beyond one each time the count lapses."""
    api = start_api("pending-rings", LENSQ_QUEUE_PREFIX="pendingrings")  # no worker serves this prefix
    broker = redis.Redis.from_url(redis_url)
    started = time.monotonic()
    with api.client(make_tenant()) as http:
        for i in range(20):
            response = http.post("/v1/jobs", json={"task": "caption", "image": data_url(shape_png(3300 + i))})
            assert response.status_code == 202
            time.sleep(0.02)  # farther apart than the doorbell's interval: each job could ring on its own
    elapsed = time.monotonic() - started
    wait_until(lambda: broker.llen("pendingrings.caption") >= 1, timeout=10, what="the first ring")
    time.sleep(0.2)  # the doorbell thread sends after the commits: let a late ring land
    assert 1 <= broker.llen("pendingrings.caption") <= 1 + elapsed / PENDING_RING_SECONDS
