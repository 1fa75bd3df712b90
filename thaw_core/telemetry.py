"""Tracing: W3C trace context travels in every message's headers (DESIGN.md section 2).

Spans are recorded by the OpenTelemetry SDK; with no exporter configured they cost little and
go nowhere, but the trace id still links an HTTP call to its lease, placement and pod events.
"""

import logging
import os

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter


def setup_tracing(service: str, console: bool = False) -> trace.Tracer:
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    if console:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return trace.get_tracer(service)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds traceparent (and tracestate) of the current span to `headers`, returns them."""
    propagate.inject(headers)
    return headers


def extract(headers: dict[str, str] | None):
    """The OpenTelemetry context carried by incoming headers (empty context if none)."""
    return propagate.extract(headers or {})


def setup_logging(service: str, level: str | None = None) -> logging.Logger:
    logging.basicConfig(
        level=(level or os.environ.get("THAW_LOG_LEVEL", "INFO")).upper(),
        format=f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faststream").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    return logging.getLogger(service)


def attach(headers: dict[str, str] | None):
    """Make the incoming trace context current; returns a token for `detach`."""
    return context.attach(extract(headers))


def detach(token) -> None:
    context.detach(token)
