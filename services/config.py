"""Settings of the services package: request limits, auth, and where the CLI finds the API."""
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
    # The stored copy's longer side: several times what the model reads (64-336 px), so a photo stays a few MB at most.
    stored_image_max_side: int = Field(1536, ge=64)

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
