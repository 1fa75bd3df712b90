"""Header names used on the bus and over HTTP, as documented constants."""

MSG_ID = "Nats-Msg-Id"  # JetStream de-duplication key
TRACEPARENT = "traceparent"  # W3C trace context
TRACESTATE = "tracestate"
AUTHORIZATION = "Authorization"  # "Bearer <api key>" on HTTP and on infer.request.*
STATUS = "Thaw-Status"  # HTTP-like status of an infer.request reply
RETRY_AFTER = "Retry-After"
CONTENT_TYPE = "Content-Type"
POD = "Thaw-Pod"  # which pod served an invocation
SEQ = "Thaw-Seq"  # a streamed answer's message number on infer.stream.<fn>: 1, 2, 3, ... (a gap: one was lost)
CALL = "Thaw-Call"  # an accepted async call (bus_schemas.calls.AsyncCall, JSON)
CALL_STATE = "Thaw-Call-State"  # a call's latest state (CallRecord, JSON) on infer.result.<id>
DEAD = "Thaw-Dead"  # why a call is in the dead-letter queue (DeadCall, JSON)
WORKER_CALL_ID = "x-thaw-call-id"  # sent to the worker with every async attempt, for idempotency
