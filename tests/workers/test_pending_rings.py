"""PendingRings: the doorbells waiting in the broker are counted, so rings that would only join them are not sent."""
from __future__ import annotations

import time
import uuid

import redis

from workers.celery_app import PendingRings


def _queue() -> str:
    return f"test-{uuid.uuid4().hex[:8]}.caption"  # a queue of its own: the broker DB is the whole run's


def test_a_waiting_ring_holds_back_the_next_until_a_worker_answers_it(redis_url):
    rings, queue = PendingRings(redis_url), _queue()
    assert rings.reserve(queue, 1) == 1
    assert rings.reserve(queue, 1) == 0  # the first still waits: a second would find its jobs claimed
    rings.answered(queue)  # a worker took it, before reading the queue: the next job rings again
    assert rings.reserve(queue, 1) == 1


def test_a_batch_wakes_as_many_workers_as_it_wants_less_those_already_rung(redis_url):
    rings, queue = PendingRings(redis_url), _queue()
    assert rings.reserve(queue, 1) == 1
    assert rings.reserve(queue, 5) == 4
    for _ in range(3):
        rings.answered(queue)
    assert rings.reserve(queue, 5) == 3  # 2 still wait
    assert redis.Redis.from_url(redis_url).get(PendingRings.key(queue)) == b"5"


def test_a_count_lapses_so_a_lost_ring_holds_back_the_others_only_briefly(redis_url):
    rings, queue = PendingRings(redis_url, lapse_seconds=0.2), _queue()
    assert rings.reserve(queue, 1) == 1  # and never answered: its message was lost
    assert rings.reserve(queue, 1) == 0
    time.sleep(0.3)
    assert rings.reserve(queue, 1) == 1


def test_answers_of_uncounted_rings_never_count_below_zero(redis_url):
    rings, queue = PendingRings(redis_url), _queue()
    rings.answered(queue)  # e.g. a sweeper's ring, which is sent without counting
    rings.answered(queue)
    assert rings.reserve(queue, 2) == 2


def test_without_a_redis_broker_every_ring_is_sent(tmp_path):
    rings, queue = PendingRings(f"sqla+sqlite:///{tmp_path / 'broker.db'}"), _queue()
    assert [rings.reserve(queue, 1) for _ in range(3)] == [1, 1, 1]
    rings.answered(queue)


def test_an_unreachable_redis_lets_every_ring_through_to_the_send():
    rings, queue = PendingRings("redis://127.0.0.1:1/0"), _queue()
    assert rings.reserve(queue, 3) == 3
    rings.answered(queue)  # logged, not raised: the count lapses by itself
