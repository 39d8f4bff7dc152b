"""The service a user would write instead of LensQ: a tiny API, one Celery task per job, one image per model call.

It is the baseline of benchmarks/end_to_end.py and is kept deliberately plain, the way such services are written:
the API inserts a row and enqueues the job's id; the task reads the row, decodes the full-size image, applies
open_clip's default preprocessing, calls the same model on that one image, and writes the result row.
Run: `uvicorn benchmarks.naive_service:api` and `celery -A benchmarks.naive_service worker -P solo`, with
NAIVE_DATABASE_URL, NAIVE_BROKER_URL and NAIVE_MODEL set.
"""
from __future__ import annotations

import base64
import io
import os

from celery import Celery, signals
from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import create_engine, text

DATABASE_URL = os.environ.get("NAIVE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/naive")
engine = create_engine(DATABASE_URL)
celery_app = Celery("naive", broker=os.environ.get("NAIVE_BROKER_URL", "redis://127.0.0.1:6379/0"))
celery_app.conf.update(task_ignore_result=True, worker_hijack_root_logger=False)
api = FastAPI()
_model: dict = {}

SCHEMA = """CREATE TABLE IF NOT EXISTS naive_jobs (
    id BIGSERIAL PRIMARY KEY, task TEXT NOT NULL, question TEXT, image BYTEA NOT NULL,
    status TEXT NOT NULL DEFAULT 'queued', result TEXT, created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    finished_at TIMESTAMPTZ)"""


class JobIn(BaseModel):
    task: str
    image: str  # base64
    question: str | None = None


@api.on_event("startup")
def create_table() -> None:
    with engine.begin() as connection:
        connection.execute(text(SCHEMA))


@api.get("/healthz")
def healthz() -> dict:
    return {"ok": True}


@api.post("/jobs")
def submit(job: JobIn) -> dict:
    with engine.begin() as connection:
        job_id = connection.execute(
            text("INSERT INTO naive_jobs (task, question, image) VALUES (:task, :question, :image) RETURNING id"),
            {"task": job.task, "question": job.question, "image": base64.b64decode(job.image)},
        ).scalar_one()
    process_job.delay(job_id)
    return {"id": job_id}


def model():
    """The model and open_clip's default eval transform, loaded once per worker process."""
    if not _model:
        import open_clip

        from multimodal import load_pipeline

        pipeline = load_pipeline(os.environ.get("NAIVE_MODEL", "lensq-tiny"), device="cpu")
        vision = pipeline.model.cfg.vision
        _model["pipeline"] = pipeline
        _model["transform"] = open_clip.image_transform(pipeline.image_size, is_train=False, mean=vision.mean,
                                                        std=vision.std)
    return _model["pipeline"], _model["transform"]


@signals.worker_process_init.connect
def load_model(**_kwargs) -> None:
    model()


@celery_app.task(name="naive.process_job")
def process_job(job_id: int) -> None:
    from PIL import Image

    pipeline, transform = model()
    with engine.begin() as connection:
        row = connection.execute(text("SELECT task, question, image FROM naive_jobs WHERE id = :id"),
                                 {"id": job_id}).one()
    image = Image.open(io.BytesIO(row.image)).convert("RGB")
    pixels = transform(image)[None]  # (1, 3, S, S)
    fields = {"question": row.question} if row.task == "vqa" else {}
    [result] = pipeline.generate_from_pixels(pixels, row.task, [fields])
    with engine.begin() as connection:
        connection.execute(text("UPDATE naive_jobs SET status = 'succeeded', result = :result, finished_at = now() "
                                "WHERE id = :id"), {"result": result, "id": job_id})
