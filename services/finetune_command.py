"""`lensq finetune FILE.jsonl --task …`: uploads the data, creates a fine-tuning job, follows it with a progress bar."""
from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from tqdm import tqdm

from services.client import LensqClient

# Exit statuses: the job succeeded (or was only queued, with --no-wait); it failed or was cancelled; the API refused.
SUCCEEDED, NOT_SUCCEEDED, API_ERROR = 0, 1, 2
FINAL = ("succeeded", "failed", "cancelled")
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}] {postfix}"


def parse_hyperparameters(pairs: list[str]) -> dict[str, Any]:
    """`--hp key=value …` as a dict; values read as JSON when they are (numbers), else kept as strings ("auto")."""
    parsed: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--hp takes key=value (e.g. max_steps=100), not {pair!r}")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def job_body(*, task: str, model: str, training_file: str, validation_file: str | None, suffix: str | None,
             labels: list[str] | None, hyperparameters: dict[str, Any]) -> dict[str, Any]:
    """The POST /v1/fine_tuning/jobs body, without the fields left unset."""
    body = {"task": task, "model": model, "training_file": training_file, "validation_file": validation_file,
            "suffix": suffix, "labels": labels, "hyperparameters": hyperparameters or None}
    return {name: value for name, value in body.items() if value is not None}


def _first(data: dict[str, Any], *names: str) -> Any:
    return next((data[name] for name in names if data.get(name) is not None), None)


def progress_postfix(data: dict[str, Any]) -> str:
    """`loss 0.412 · val 0.73` from a progress event's data (LensQ's names, or OpenAI's)."""
    loss = _first(data, "loss", "train_loss")
    metric = _first(data, "validation_metric", "valid_metric", "full_valid_mean_token_accuracy")
    parts = ([f"loss {loss:.4g}"] if isinstance(loss, (int, float)) else []) + (
        [f"val {metric:.4g}"] if isinstance(metric, (int, float)) else [])
    return " · ".join(parts)


def _show(event: dict[str, Any], bar: tqdm) -> None:
    data = event.get("data") if isinstance(event.get("data"), dict) else {}
    if isinstance(data.get("step"), int):
        total = _first(data, "max_steps", "total_steps")
        if isinstance(total, int) and total != bar.total:
            bar.total = total
        bar.update(data["step"] - bar.n)
        bar.set_postfix_str(progress_postfix(data))
    else:
        level = event.get("level", "info")
        bar.write(f"{'' if level == 'info' else level + ': '}{event.get('message', '')}", file=bar.fp)


def follow_job(client: LensqClient, job_id: str, *, stream: TextIO | None = None) -> dict:
    """Draws the job's progress from its events until it is final; returns the job as it then is."""
    job = client.get_fine_tuning_job(job_id)
    total = (job.get("hyperparameters") or {}).get("max_steps")
    with tqdm(total=total, initial=0, desc=job_id[:14], bar_format=BAR_FORMAT, file=stream or sys.stderr) as bar:
        for event in client.fine_tuning_events(job_id):
            _show(event, bar)
    return client.get_fine_tuning_job(job_id)


def exit_status(job: dict, out: TextIO, err: TextIO) -> int:
    """Prints the model's name (succeeded) or why not; 0 only when it succeeded."""
    if job["status"] == "succeeded":
        print(job["fine_tuned_model"], file=out)
        return SUCCEEDED
    reason = (job.get("error") or {}).get("message") or job["status"]
    print(f"fine-tuning job {job['id']} {job['status']}: {reason}", file=err)
    return NOT_SUCCEEDED


def run_finetune(client: LensqClient, *, training_path: str, validation_path: str | None, wait: bool,
                 out: TextIO = sys.stdout, err: TextIO = sys.stderr, **fields: Any) -> int:
    """Uploads, creates, and (unless not waiting) follows the job to its end."""
    training = client.upload_file(training_path, purpose="fine-tune")
    validation = client.upload_file(validation_path, purpose="fine-tune") if validation_path else None
    job = client.create_fine_tuning_job(job_body(training_file=training["id"],
                                                 validation_file=validation["id"] if validation else None, **fields))
    for warning in (job.get("data_report") or {}).get("warnings") or []:
        print(f"warning: {warning['message']}", file=err)
    if not wait:
        print(json.dumps(job, indent=2), file=out)
        return SUCCEEDED
    return exit_status(follow_job(client, job["id"], stream=err), out, err)
