"""The `lensq` command line: serve, worker, migrate, demo, keys, submit, batch, jobs, finetune, train (never
imports torch)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from services.config import ClientSettings

TASKS = ("caption", "vqa", "sentiment", "classify")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from services.config import ServiceSettings
    from services.metrics import prepare_multiprocess_dir
    from services.request_logs import uvicorn_log_config

    settings = ServiceSettings()
    prepare_multiprocess_dir()  # with PROMETHEUS_MULTIPROC_DIR set, before any API process writes its counts there
    uvicorn.run("services.app:create_app", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_config=uvicorn_log_config(settings.log_format, settings.log_level))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Replaces this process with a Celery worker (the model loads in it, never in the CLI)."""
    from services.processes import worker_command

    queues = args.queues.split(",") if args.queues else None
    command = worker_command(name=args.name, queues=queues, log_level=args.loglevel, pool=args.pool)
    if args.pool != "solo":
        command += ["--concurrency", str(args.concurrency)]
    os.execv(command[0], command)
    return 1  # not reached


MODEL_COMMANDS = {"train": "train a checkpoint (python -m multimodal.train)",
                  "evaluate": "held-out evaluation of a checkpoint (python -m multimodal.evaluate)"}


def run_model_module(name: str, rest: list[str]) -> int:
    """`lensq train|evaluate …` replaces this process with `python -m multimodal.train|evaluate …`."""
    command = [sys.executable, "-m", f"multimodal.{name}", *rest]
    os.execv(command[0], command)
    return 1  # not reached


def cmd_migrate(args: argparse.Namespace) -> int:
    from db.migrate import upgrade

    upgrade(args.database_url, args.revision)
    print(f"migrated to {args.revision}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from services.demo import run_demo

    return run_demo(Path(args.dir), timeout=args.timeout)


def parse_scopes(values: list[str]) -> list[str]:
    """Scopes given as separate words or comma-separated (`--scopes submit read`, `--scopes submit,read`)."""
    from db.models import KEY_SCOPES

    scopes = [scope for value in values for scope in value.replace(",", " ").split()]
    unknown = sorted(set(scopes) - set(KEY_SCOPES))
    if unknown or not scopes:
        raise SystemExit(f"--scopes takes one or more of {', '.join(KEY_SCOPES)}; got {', '.join(unknown) or 'none'}")
    return scopes


def _create_key(session, args: argparse.Namespace) -> None:
    from db.queries import create_api_key, get_or_create_tenant

    if args.rate_limit_per_minute is not None and args.rate_limit_per_minute < 1:
        raise SystemExit("--rate-limit-per-minute must be at least 1")
    tenant = get_or_create_tenant(session, name=args.tenant)
    key, token = create_api_key(session, tenant_id=tenant.id, name=args.name, scopes=parse_scopes(args.scopes),
                                rate_limit_per_minute=args.rate_limit_per_minute)
    print(token)
    print(f"key {key.prefix}… ({key.scopes}) for tenant {tenant.name!r}: shown once, stored only as a sha256",
          file=sys.stderr)


def cmd_keys(args: argparse.Namespace) -> int:
    from db.queries import list_api_keys, revoke_api_key
    from db.session import session_scope

    with session_scope(args.database_url) as session:
        if args.keys_command == "create":
            _create_key(session, args)
        elif args.keys_command == "list":
            for key, tenant in list_api_keys(session, tenant_name=args.tenant):
                state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "live"
                rate = f"{key.rate_limit_per_minute}/min" if key.rate_limit_per_minute else "default rate"
                print(f"{key.id}  {key.prefix}…  {tenant:<20} {key.name:<20} {key.scopes:<18} {rate:<14} "
                      f"{key.created_at:%Y-%m-%d %H:%M}  {state}")
        else:
            count = revoke_api_key(session, prefix_or_id=args.key)
            print(f"revoked {count} key(s)")
            return 0 if count else 1
    return 0


def _client(args: argparse.Namespace):
    from services.client import LensqClient

    if not args.api_key:
        raise SystemExit("no API key: pass --api-key or set LENSQ_API_KEY (create one with `lensq keys create`)")
    return LensqClient(args.api_url, args.api_key)


def _task_fields(args: argparse.Namespace) -> dict:
    fields = {"question": args.question, "text": args.text, "labels": args.labels}
    return {name: value for name, value in fields.items() if value is not None}


def cmd_submit(args: argparse.Namespace) -> int:
    from services.client import LensqAPIError, image_data_url

    client = _client(args)
    try:
        fields = {"task": args.task, "image": image_data_url(Path(args.image).read_bytes()), **_task_fields(args)}
        job = client.submit_job(fields, idempotency_key=args.idempotency_key)
        if args.wait:
            job = client.wait_for_job(job["id"], timeout=args.timeout)
    except LensqAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(json.dumps(job, indent=2))
    return 0 if job["status"] in ("queued", "running", "succeeded") else 1


def cmd_batch(args: argparse.Namespace) -> int:
    from services.batch_command import items_from_folder, items_from_jsonl, run_batch_command
    from services.client import LensqAPIError, LensqUnreachable

    source = Path(args.source)
    items = items_from_folder(source) if source.is_dir() else items_from_jsonl(source)
    client = _client(args)
    try:
        sent = run_batch_command(client, items=items, task=args.task, common=_task_fields(args),
                                 out_path=Path(args.out), chunk_size=args.chunk_size, fmt=args.format)
    except (LensqAPIError, ValueError) as exc:  # ValueError: --out holds something else than our results
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, LensqUnreachable):
            print(f"the results so far are in {args.out}: the same command resumes from there", file=sys.stderr)
        return 2
    finally:
        client.close()
    print(f"{sent} item(s) processed, {len(items) - sent} already in {args.out}", file=sys.stderr)
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    from services.batch_watch import API_ERROR, TIMED_OUT, counts_text, exit_status, watch_batch
    from services.client import LensqAPIError

    client = _client(args)
    try:
        batch, finished = watch_batch(client, args.batch_id, interval=args.interval, timeout=args.timeout)
    except LensqAPIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return API_ERROR
    finally:
        client.close()
    print(json.dumps(batch, indent=2))
    if not finished:
        print(f"batch {args.batch_id} not finished after {args.timeout:g}s: {counts_text(batch['counts'])}",
              file=sys.stderr)
        return TIMED_OUT
    return exit_status(batch, allow_failed=args.allow_failed)


def cmd_finetune(args: argparse.Namespace) -> int:
    from services.client import LensqAPIError
    from services.finetune_command import API_ERROR, exit_status, follow_job, parse_hyperparameters, run_finetune

    if (args.file is None) == (args.job is None):
        print("error: give a training FILE.jsonl, or --job ID to follow a job already created", file=sys.stderr)
        return API_ERROR
    if args.file is not None and args.task is None:
        print("error: --task is required with a training file", file=sys.stderr)
        return API_ERROR
    try:
        hyperparameters = parse_hyperparameters(args.hp)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return API_ERROR
    client = _client(args)
    try:
        if args.job:
            return exit_status(follow_job(client, args.job), sys.stdout, sys.stderr)
        return run_finetune(client, training_path=args.file, validation_path=args.validation, wait=args.wait,
                            task=args.task, model=args.model, suffix=args.suffix, labels=args.labels,
                            hyperparameters=hyperparameters)
    except (LensqAPIError, OSError) as exc:  # OSError: a file that cannot be read
        print(f"error: {exc}", file=sys.stderr)
        return API_ERROR
    finally:
        client.close()


def _add_api_options(parser: argparse.ArgumentParser, settings: ClientSettings) -> None:
    parser.add_argument("--api-url", default=settings.api_url, help="default: $LENSQ_API_URL")
    parser.add_argument("--api-key", default=settings.api_key, help="default: $LENSQ_API_KEY")


def _add_client_options(parser: argparse.ArgumentParser, settings: ClientSettings) -> None:
    _add_api_options(parser, settings)
    parser.add_argument("--question", help="vqa: the question")
    parser.add_argument("--text", help="sentiment: the post's text")
    parser.add_argument("--labels", nargs="+", help="classify: two or more candidate labels")


def _add_server_commands(sub, settings: ClientSettings) -> None:
    serve = sub.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", default=settings.host)
    serve.add_argument("--port", type=int, default=settings.port)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run a Celery worker (one model per process)")
    worker.add_argument("--queues", help="comma-separated; default: every inference task queue (fine-tuning runs "
                                         "only on workers started with --queues lensq.train)")
    worker.add_argument("--name", default="lensq@%h")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--pool", default="solo", choices=("solo", "prefork"))
    worker.add_argument("--concurrency", type=int, default=1, help="prefork only: processes (each loads the model)")
    worker.set_defaults(func=cmd_worker)

    demo = sub.add_parser("demo", help="the embedded demo: SQLite + one worker + the API, on the bundled samples")
    demo.add_argument("--dir", default=".lensq/demo")
    demo.add_argument("--timeout", type=float, default=480)
    demo.set_defaults(func=cmd_demo)


def _add_admin_commands(sub) -> None:
    migrate = sub.add_parser("migrate", help="apply the database migrations")
    migrate.add_argument("--database-url", default=None, help="default: $LENSQ_DATABASE_URL")
    migrate.add_argument("--revision", default="head")
    migrate.set_defaults(func=cmd_migrate)

    keys = sub.add_parser("keys", help="API keys")
    keys.add_argument("--database-url", default=None)
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key (prints the token once)")
    create.add_argument("--tenant", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--scopes", nargs="+", default=["submit", "read"], metavar="SCOPE",
                        help="submit, read and/or admin (admin manages the tenant's keys and settings through the "
                             "API); default: submit read")
    create.add_argument("--rate-limit-per-minute", type=int, default=None,
                        help="this key's requests per minute; default: the service's LENSQ_KEY_RATE_LIMIT_PER_MINUTE")
    listing = keys_sub.add_parser("list", help="list keys (prefixes only)")
    listing.add_argument("--tenant")
    revoke = keys_sub.add_parser("revoke", help="revoke a key by id or prefix")
    revoke.add_argument("key")
    keys.set_defaults(func=cmd_keys)


def _add_client_commands(sub, settings: ClientSettings) -> None:
    submit = sub.add_parser("submit", help="submit one image and print the job")
    submit.add_argument("image")
    submit.add_argument("--task", required=True, choices=TASKS)
    submit.add_argument("--no-wait", dest="wait", action="store_false", help="return once queued")
    submit.add_argument("--timeout", type=float, default=300)
    submit.add_argument("--idempotency-key")
    _add_client_options(submit, settings)
    submit.set_defaults(func=cmd_submit)

    batch = sub.add_parser("batch", help="a folder of images or a JSONL file through the API, resumable")
    batch.add_argument("source", help="a folder of images, or a JSONL file of items")
    batch.add_argument("--task", required=True, choices=TASKS)
    batch.add_argument("--out", required=True, help="results file (JSONL, or CSV); items already in it are skipped")
    batch.add_argument("--format", choices=("jsonl", "csv"), default=None,
                       help="the results file's format; default: csv if --out ends in .csv, else jsonl")
    batch.add_argument("--chunk-size", type=int, default=100)
    _add_client_options(batch, settings)
    batch.set_defaults(func=cmd_batch)

    jobs = sub.add_parser("jobs", help="follow jobs")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    watch = jobs_sub.add_parser("watch", help="follow a batch live until every job is final; exit 1 if any failed "
                                              "or was cancelled, 3 on --timeout")
    watch.add_argument("batch_id")
    watch.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    watch.add_argument("--timeout", type=float, default=None, help="give up (exit 3) after this many seconds")
    watch.add_argument("--allow-failed", action="store_true", help="exit 0 even if jobs failed or were cancelled")
    _add_api_options(watch, settings)
    watch.set_defaults(func=cmd_jobs_watch)

    finetune = sub.add_parser("finetune", help="fine-tune the model on a JSONL file and follow it to its end; prints "
                                               "the new model's name (exit 1 if it failed or was cancelled)")
    finetune.add_argument("file", nargs="?", help="training data: JSONL lines of image (data: URL) or image_sha256, "
                                                  "text, and label / answer / caption")
    finetune.add_argument("--task", choices=TASKS, help="what to tune for (required with FILE)")
    finetune.add_argument("--validation", help="a validation JSONL file; default: carved from FILE")
    finetune.add_argument("--model", default="lensq-tiny", help="the base model")
    finetune.add_argument("--suffix", help="part of the new model's name")
    finetune.add_argument("--labels", nargs="+", help="classify: the label set")
    finetune.add_argument("--hp", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
                          help="hyperparameters, e.g. max_steps=100 learning_rate=0.0005")
    finetune.add_argument("--no-wait", dest="wait", action="store_false", help="print the job once it is queued")
    finetune.add_argument("--job", help="follow this job (ftjob-...) instead of creating one")
    _add_api_options(finetune, settings)
    finetune.set_defaults(func=cmd_finetune)


def build_parser() -> argparse.ArgumentParser:
    """The `lensq` argument parser with every subcommand."""
    settings = ClientSettings()
    parser = argparse.ArgumentParser(prog="lensq", description="LensQ: a multimodal job service.")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_server_commands(sub, settings)
    _add_admin_commands(sub)
    _add_client_commands(sub, settings)
    for name, summary in MODEL_COMMANDS.items():  # listed for --help; main() hands them over whole
        sub.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in MODEL_COMMANDS:
        return run_model_module(argv[0], argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
