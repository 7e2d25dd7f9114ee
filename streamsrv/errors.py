"""One exception tree for streamsrv.

::

    StreamsrvError
    ├── ConfigError           a config file or value is invalid (names file, line, field, value)
    ├── SourceError           a camera source cannot be opened or read
    │   ├── SourceTimeout         open/read timed out, or the stream stalled
    │   └── SourceUnavailable     refused, not found, unauthorized, not video
    ├── ModelError            the model cannot be loaded or run
    ├── NotFoundError         an id (camera, event, zone) does not exist
    ├── ConflictError         the object to create exists already
    ├── EventBusUnavailable   the event bus's store (Redis) cannot be read
    ├── LaneClosed            a lane of the inference loop was closed
    └── Busy                  too much work is waiting already (a 429 with Retry-After)

Exceptions that belong to one module live there, each a ``StreamsrvError`` unless noted:

- ``streamsrv.runtime.registry.PersistError``: a change applied live could not be written to the config file.
- ``streamsrv.jobs.store.JobStoreUnavailable``: Redis, where jobs are kept, cannot be reached.
- ``streamsrv.preview.webrtc.BadOffer``, ``PeerLimitReached``: a WebRTC offer that cannot be used, or too many
  viewers.
- ``streamsrv.ipc.frame_ring.RingClosed`` (a ``RuntimeError``): a frame ring closed in this process.
- ``streamsrv.api.middleware.BodyTooLarge`` (an ``HTTPException``): a request body over its limit, a 413.

Private exceptions (``_Stop`` in the job runner, ``_Unavailable`` in the events client) only carry control flow
inside their module and never leave it.
"""


class StreamsrvError(Exception):
    """Base of every error streamsrv raises on purpose."""


class ConfigError(StreamsrvError):
    """Invalid configuration; the message names the file, field path and offending value."""


class SourceError(StreamsrvError):
    """A camera source failed to open or read."""


class SourceTimeout(SourceError):
    """A source did not answer within its open/read timeout, or stopped delivering frames."""


class SourceUnavailable(SourceError):
    """A source refused the connection, does not exist, needs credentials, or is not video."""


class ModelError(StreamsrvError):
    """The model could not be loaded or run."""


class NotFoundError(StreamsrvError):
    """A named object (camera, event, zone) does not exist."""


class ConflictError(StreamsrvError):
    """The object to create exists already."""


class EventBusUnavailable(StreamsrvError):
    """The bus's backing store (Redis) cannot be reached for a read; publishing never raises this."""


class LaneClosed(StreamsrvError):
    """A lane of the inference loop was closed (its job deleted, or the server stopping)."""


class Busy(StreamsrvError):
    """Too much work is waiting already; try again after ``retry_after_s``."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
