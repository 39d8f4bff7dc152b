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


class ClientSettings(BaseSettings):
    """Where the `lensq` CLI's client commands send requests."""

    model_config = SettingsConfigDict(env_prefix="LENSQ_", extra="ignore")

    api_url: str = "http://127.0.0.1:8000"
    api_key: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
