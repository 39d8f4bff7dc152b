"""Settings of the services package: request limits, auth, and where the CLI finds the API."""
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ALLOWED_IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")


class ServiceSettings(BaseSettings):
    """API limits, read from LENSQ_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore")

    max_image_bytes: int = Field(10 * 1024 * 1024, ge=1)
    max_image_pixels: int = Field(40_000_000, ge=1)
    max_request_bytes: int = Field(64 * 1024 * 1024, ge=1)
    max_question_chars: int = Field(500, ge=1)
    max_text_chars: int = Field(5000, ge=1)
    max_label_chars: int = Field(100, ge=1)
    min_labels: int = 2
    max_labels: int = 50
    max_ref_chars: int = 500
    max_idempotency_key_chars: int = 200
    max_batch_items: int = Field(1000, ge=1)
    default_page_size: int = 50
    max_page_size: int = 500
    max_attempts: int = Field(3, ge=1)
    min_priority: int = -100
    max_priority: int = 100

    # --- access: key scopes, per-key request rate, per-tenant job quota (deps.py, rate_limits.py, routes/keys.py)
    # Requests per minute a key may make unless it has its own limit; the highest a tenant admin may give a key.
    # High enough for a client polling a few dozen jobs twice a second (the demo does).
    key_rate_limit_per_minute: int = Field(6000, ge=1)
    key_rate_limit_ceiling: int = Field(60_000, ge=1)
    # Queued plus running jobs a tenant may hold unless it has its own quota; the highest a tenant admin may set.
    tenant_max_active_jobs: int = Field(10_000, ge=1)
    tenant_max_active_jobs_ceiling: int = Field(1_000_000, ge=1)
    # Where the rate counters live, shared by every API process; unset: the broker when it is Redis, else in-process.
    rate_limit_redis_url: str | None = None

    # --- hostile input: body caps (body_limit.py), multipart limits (request_bodies.py), image URLs (image_urls.py)
    # Room in a one-job body for everything but the image (fields, JSON or multipart framing).
    max_job_fields_bytes: int = Field(1024 * 1024, ge=1)
    max_form_files: int = Field(1, ge=1)
    max_form_fields: int = Field(100, ge=1)
    # A multipart text field (question, text, labels...); the image travels as a file part, not a field.
    max_form_field_bytes: int = Field(64 * 1024, ge=1)
    image_url_timeout_seconds: float = Field(10.0, gt=0)
    image_url_max_redirects: int = Field(3, ge=0)
    # CIDRs an image URL may reach although they are private or loopback: empty in production; tests add 127.0.0.1/32.
    image_url_allow_cidrs: list[str] = Field(default_factory=list)
    # A job's or batch's callback_url, and the tenant's webhook_url (the ledger's columns hold 2000).
    max_callback_url_chars: int = Field(2000, ge=1, le=2000)
    # The stored copy's longer side: several times what the model reads (64-336 px), so a photo stays a few MB at most.
    stored_image_max_side: int = Field(1536, ge=64)
    # A JPEG upload is stored as a JPEG of this quality (see services/canonical_image.py): at 95 the re-encode moves a
    # pixel by about half a level on a photo (under two on small sharp-edged images), and the worker can decode it at a
    # reduced DCT scale.
    stored_jpeg_quality: int = Field(95, ge=75, le=100)

    # --- the web page /ui (services/ui): its session cookie, live list and thumbnails
    # Signs the session cookie. Unset: a random secret per API process, so sessions end when it restarts; set it
    # (the same value everywhere) when several API processes serve /ui.
    ui_session_secret: str | None = None
    ui_session_hours: float = Field(12.0, gt=0)
    # The cookie's Secure flag; unset: Secure when the request came over https.
    ui_cookie_secure: bool | None = None
    # How often the live list looks for changed jobs, how often it sends a keep-alive, and when a stream ends
    # (the browser then reconnects with Last-Event-ID, so no change is lost).
    ui_events_poll_seconds: float = Field(0.5, gt=0)
    ui_events_keepalive_seconds: float = Field(15.0, gt=0)
    ui_events_max_seconds: float = Field(300.0, gt=0)
    ui_thumbnail_side: int = Field(160, ge=16, le=1024)

    # --- the OpenAI-compatible surface (services/routes/openai_*.py)
    # How long POST /v1/chat/completions waits for its job; past it the answer is a 504 naming the job to poll.
    openai_wait_seconds: float = Field(120.0, gt=0)
    # How often a waiting request reads the ledger for its jobs.
    openai_poll_seconds: float = Field(0.2, gt=0)
    # How long POST /v1/moderations waits for its jobs; an item not scored by then is flagged (fail closed).
    moderation_wait_seconds: float = Field(60.0, gt=0)
    # Inputs in one moderation request (each becomes a few jobs).
    moderation_max_inputs: int = Field(32, ge=1)
    # The largest file POST /v1/files stores (a batch input of base64 images is big); below max_request_bytes.
    max_file_bytes: int = Field(48 * 1024 * 1024, ge=1)

    # --- fine-tuning (services/routes/fine_tuning.py, services/fine_tune_*.py)
    # The base models a tenant may fine-tune: those the workers serve. GET /v1/models lists them, a job naming one
    # runs on the base, and the first is shown as the `model` of a job that runs on no version.
    fine_tune_base_models: list[str] = Field(default_factory=lambda: ["lensq-tiny"], min_length=1)
    # Fine-tunes one tenant may have waiting or training at once: training holds a whole worker for minutes, so one
    # tenant must not fill the train queue ahead of everyone else.
    fine_tune_max_active_per_tenant: int = Field(4, ge=1)
    # Examples a training file needs at least (validation and test are carved from it), and at most.
    fine_tune_min_examples: int = Field(20, ge=3)
    fine_tune_max_examples: int = Field(50_000, ge=1)
    # Shares of the training file carved into the test split, and into validation when no validation file is given.
    fine_tune_test_fraction: float = Field(0.2, gt=0, lt=0.5)
    fine_tune_validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    # A label imbalance warning when the largest class has over this many times the smallest one's examples.
    fine_tune_imbalance_ratio: float = Field(3.0, gt=1)
    fine_tune_max_target_chars: int = Field(500, ge=1)  # a label, answer or caption
    fine_tune_max_steps: int = Field(20_000, ge=1)
    fine_tune_max_batch_size: int = Field(512, ge=1)
    # How many bad lines an error or warning names (the count says how many there are in all).
    fine_tune_reported_lines: int = Field(5, ge=1)
    # The live events stream (?stream=true): how often it reads the ledger, and its age limit (the client then
    # reconnects with `after`, losing nothing); keep-alives follow ui_events_keepalive_seconds.
    fine_tune_events_poll_seconds: float = Field(0.5, gt=0)
    fine_tune_events_max_seconds: float = Field(300.0, gt=0)

    # --- operations: logs and Prometheus metrics (services/request_logs.py, services/metrics.py)
    log_format: Literal["text", "json"] = "text"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    metrics_enabled: bool = True
    # When set, GET /metrics asks for `Authorization: Bearer <this>` (Prometheus: authorization.credentials_file).
    metrics_token: str | None = None
    # The whole-ledger counts (finished jobs, batch sizes) scan the jobs table: read at most this often per process,
    # and given up after the timeout so a slow scrape never piles up; queue depth is read on every scrape.
    metrics_ledger_cache_seconds: float = Field(15.0, ge=0)
    metrics_ledger_timeout_seconds: float = Field(5.0, gt=0)

    @property
    def max_job_request_bytes(self) -> int:
        """The cap on a POST /v1/jobs body: one image as base64 (4/3 of its bytes) plus the other fields."""
        return self.max_image_bytes * 4 // 3 + self.max_job_fields_bytes


class ClientSettings(BaseSettings):
    """Where the `lensq` CLI's client commands send requests."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore")

    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
