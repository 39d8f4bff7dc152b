"""200 jobs over HTTP to 2 workers: all succeed, one result each, each equal to load_pipeline on the same input."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from image_factory import data_url, photo_jpeg, shape_png
from polling import wait_for_final

QUESTIONS = ("what shape is in the image?", "what color is the shape?", "is there a circle?", "what is this?")
TEXTS = ("I love this so much", "this is terrible", "it's fine I guess", "", "best day ever!!!")
LABEL_SETS = (["circle", "rectangle", "triangle"], ["red", "green", "blue", "black"], ["a cat", "a rocket"])
PHOTOS = ("chelsea", "rocket", "coffee", "astronaut")


def job_specs(count: int) -> list[dict]:
    """`count` jobs spread evenly over the four tasks, on distinct shape images and a few photos."""
    specs = []
    for i in range(count):
        image = photo_jpeg(PHOTOS[i % 4]) if i % 25 == 0 else shape_png(i)
        task = ("caption", "vqa", "sentiment", "classify")[i % 4]
        fields = {"caption": {}, "vqa": {"question": QUESTIONS[i % 4]}, "sentiment": {"text": TEXTS[i % 5]},
                  "classify": {"labels": LABEL_SETS[i % 3]}}[task]
        specs.append({"task": task, "bytes": image, **fields})
    return specs


def expected_result(pipeline, spec: dict):
    """The pipeline's result on what the worker reads: the API's stored copy, prepared at the model's size."""
    from services.config import ServiceSettings
    from services.input_checks import check_image

    image = [pipeline.prepare(check_image(spec["bytes"], ServiceSettings()).data)]
    if spec["task"] == "caption":
        return {"caption": pipeline.caption(image)[0]}
    if spec["task"] == "vqa":
        return {"answer": pipeline.answer(image, [spec["question"]])[0]}
    if spec["task"] == "sentiment":
        return pipeline.sentiment(image, [spec["text"]])[0]
    return pipeline.classify(image, [spec["labels"]])[0]


def assert_same_result(actual: dict, expected: dict, where: str) -> None:
    """Texts exactly equal; probabilities within 1e-3."""
    assert set(actual) == set(expected), where
    for key, value in expected.items():
        if isinstance(value, dict):
            assert set(actual[key]) == set(value), where
            for label, probability in value.items():
                assert actual[key][label] == pytest.approx(float(probability), abs=1e-3), where
        else:
            assert actual[key] == value, where


@pytest.mark.timeout(300)
def test_200_jobs_on_two_workers_match_the_pipeline(api, tenant, two_workers, session_factory, reference_pipeline):
    specs = job_specs(200)

    def submit(spec: dict) -> str:
        body = {k: v for k, v in spec.items() if k != "bytes"} | {"image": data_url(spec["bytes"])}
        with api.client(tenant) as http:
            response = http.post("/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = [uuid.UUID(job_id) for job_id in pool.map(submit, specs)]
    expected = [expected_result(reference_pipeline, spec) for spec in specs]  # computed while the workers run
    jobs = wait_for_final(session_factory, ids, timeout=240)

    assert len(set(ids)) == 200
    owners = set()
    for job_id, spec, want in zip(ids, specs, expected):
        job = jobs[job_id]
        assert (job.status, job.error, job.attempts) == ("succeeded", None, 1), (job.id, job.error)
        assert job.model_version == reference_pipeline.model_version
        assert_same_result(job.result, want, f"{spec['task']} job {job.id}")
        owners.add(job.lease_owner)
    assert {owner.rsplit("/", 1)[1] for owner in owners} == {str(w.pid) for w in two_workers}, "both workers ran jobs"
    with api.client(tenant) as http:
        listed = http.get("/v1/jobs", params={"limit": 500, "status": "succeeded"}).json()["data"]
    assert sorted(job["id"] for job in listed) == sorted(map(str, ids))
