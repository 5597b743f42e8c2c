"""Request and response models of webhook receivers (/webhooks) and of their deliveries, as the notifier
records them. Times are ISO-8601 UTC (`Z`)."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import ConfigDict, Field

from telemetrypulse.api.schemas import (
    AlertStatus,
    ApiModel,
    DeliveryState,
    OperatorInput,
    PlainText,
    Severity,
    UtcDatetime,
)


class WebhookIn(OperatorInput):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/telemetry",
                    "site_id": "site-01",
                    "min_severity": "warning",
                }
            ]
        },
    )

    url: Annotated[PlainText, Field(min_length=1, max_length=2000, description="http:// or https:// URL")]
    site_id: str | None = Field(
        None, pattern=r"^[A-Za-z0-9._-]{1,64}$", description="Only alerts of this site (default: every site)"
    )
    min_severity: Severity = Field("info", description="Only alerts of at least this severity")


class Webhook(ApiModel):
    name: str
    url: str
    site_id: str | None
    min_severity: Severity
    created_at: UtcDatetime
    updated_at: UtcDatetime


class WebhookList(ApiModel):
    items: list[Webhook] = Field(
        description="Receivers kept by PUT /webhooks/{name}, by name (WEBHOOK_URLS not shown)"
    )


class WebhookDelivery(ApiModel):
    receiver: str = Field(description="Webhook name, or `env-…` for a URL of WEBHOOK_URLS")
    delivery_id: str = Field(description="`{alert_id}:{status}`, the X-TelemetryPulse-Delivery header")
    alert_id: UUID
    status: AlertStatus
    state: DeliveryState = Field(description="pending (to send or retry), delivered (2xx recorded), expired")
    attempts: int
    created_at: UtcDatetime
    next_attempt_at: UtcDatetime | None = Field(description="When it is tried next (pending only)")
    last_attempt_at: UtcDatetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: UtcDatetime | None
    seq: int = Field(description="Creation order; each receiver is sent in this order")


class WebhookDeliveryPage(ApiModel):
    items: list[WebhookDelivery] = Field(description="Newest first")
    next_cursor: int | None = Field(
        None, description="Pass as `cursor` for the next page; null on the last page"
    )
