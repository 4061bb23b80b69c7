"""The hub's pure core: catalog, envelopes, subscribers, dispatch, ledger, batches.

No I/O and no clock of its own: the real hub and the simulator drive the same code.
"""

from ._batches import (
    BatchSynthesizer,
    OpenBucket,
    batch_failure,
    batch_failure_from_json,
    completion_id,
)
from ._catalog import (
    EVENT_TYPE_PATTERN,
    SEVERITIES,
    Catalog,
    CatalogRow,
    parse_catalog,
)
from ._envelope import (
    ISA13_PATTERN,
    TENANT_PATTERN,
    TOKEN_TEXT_PATTERN,
    BatchRef,
    Envelope,
    envelope_from_json,
    envelopes_from_body,
    format_timestamp,
    parse_timestamp,
)
from ._errors import (
    CatalogError,
    ConfigError,
    EnvelopeError,
    RealtimeError,
    StreamLimitError,
    TokenError,
)
from ._frames import (
    PING_FRAME,
    EncodedEvent,
    control_frame,
    encode_event,
    ready_frame,
    shutdown_frame,
)
from ._hub import (
    Clock,
    CoreSettings,
    DisconnectReason,
    DropReason,
    HubCore,
    HubStatistics,
    Principal,
    Subscriber,
    SubscriberState,
    SubscriberStatistics,
    TenantCounters,
    TenantStatistics,
)
from ._replay import ReplayBuffer

__all__ = [
    "EVENT_TYPE_PATTERN",
    "ISA13_PATTERN",
    "PING_FRAME",
    "SEVERITIES",
    "TENANT_PATTERN",
    "TOKEN_TEXT_PATTERN",
    "BatchRef",
    "BatchSynthesizer",
    "Catalog",
    "CatalogError",
    "CatalogRow",
    "Clock",
    "ConfigError",
    "CoreSettings",
    "DisconnectReason",
    "DropReason",
    "EncodedEvent",
    "Envelope",
    "EnvelopeError",
    "HubCore",
    "HubStatistics",
    "OpenBucket",
    "Principal",
    "RealtimeError",
    "ReplayBuffer",
    "StreamLimitError",
    "Subscriber",
    "SubscriberState",
    "SubscriberStatistics",
    "TenantCounters",
    "TenantStatistics",
    "TokenError",
    "batch_failure",
    "batch_failure_from_json",
    "completion_id",
    "control_frame",
    "encode_event",
    "envelope_from_json",
    "envelopes_from_body",
    "format_timestamp",
    "parse_catalog",
    "parse_timestamp",
    "ready_frame",
    "shutdown_frame",
]
