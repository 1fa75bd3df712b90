"""Tracing: W3C trace context travels in every message's headers (DESIGN.md section 2), so one
call that wakes a function is one trace: the gateway's `invoke` span, placement's `consume
lease.requested`, the agent's `consume place.assigned` and `await healthy`, the snapshotter's
`restore`.

Spans are exported over OTLP/HTTP when the standard variables say where
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`; the exporter reads the
other OTEL_* settings itself). Without one, no SDK is installed: spans are the API's no-op
ones, which cost next to nothing on the warm path, and no trace context is sent.
"""

import logging
import os
from contextlib import AbstractContextManager, nullcontext
from contextvars import Token

from opentelemetry import context, propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")


def setup_tracing(service: str, console: bool = False) -> trace.Tracer:
    exporter = _exporter(console)
    if exporter is not None:
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    return trace.get_tracer(service)


def _exporter(console: bool) -> SpanExporter | None:
    if any(os.environ.get(v) for v in OTLP_VARIABLES):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    return ConsoleSpanExporter() if console else None


def span(name: str, **attributes: str | int | float | bool) -> AbstractContextManager[trace.Span]:
    """A span named `name`, current inside the `with`, child of whatever is current. Without an
    SDK there is nothing to record, and the API's no-op span still cost a placement worker ~3%
    of its time, one per message (bench/fleet_replay.py): the incoming context, already
    current, is what travels on."""
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        return nullcontext(trace.INVALID_SPAN)
    return trace.get_tracer("thaw").start_as_current_span(name, attributes=attributes)


def annotate(**attributes: str | int | float | bool) -> None:
    """Set attributes on the current span (nothing happens without one)."""
    trace.get_current_span().set_attributes(attributes)


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Adds traceparent (and tracestate) of the current span to `headers`, returns them."""
    propagate.inject(headers)
    return headers


def extract(headers: dict[str, str] | None) -> context.Context:
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


def attach(headers: dict[str, str] | None) -> Token[context.Context]:
    """Make the incoming trace context current; returns a token for `detach`."""
    return context.attach(extract(headers))


def detach(token: Token[context.Context]) -> None:
    context.detach(token)
