"""The RabbitMQ bus: a durable topic exchange stands for the Service Bus topic, and
one durable queue per replica, named from its replica id, for its subscription.

Each queue is bounded as a Service Bus subscription is: ``x-max-length`` with
``x-overflow: drop-head`` and ``x-message-ttl``. Drop-head was chosen over
reject-publish because a full queue belongs to one replica that fell behind:
rejecting would fail every publisher and starve the healthy replicas for it, while
dropping the oldest waiting events costs only that replica, and only events whose
dashboards a reload recovers anyway. Publishing waits for the broker's confirms
(messages are persistent unless configured otherwise, so a broker restart keeps
what is queued); a replica's
consumer holds at most ``prefetch`` unacknowledged messages and acknowledges them
after dispatch.

One connection per bus, watched by a supervisor task. When it is lost (broker
restart, dropped connection, a channel closed by the broker) every subscription
stops being live, a WARNING line says why, and the supervisor reconnects with
exponential backoff, redeclares the topology and consumes again by itself. The
broker redelivers what was not acknowledged; the subscription skips the event ids
it has already handed out, so each replica still dispatches each event once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from yarl import URL

from ._bus import FaultBoard, QueuedSubscription, Waiting
from ._logging import log_event
from ._publisher import new_event_id, now_iso
from .core import (
    BusUnavailable,
    Catalog,
    ConfigError,
    Envelope,
    EnvelopeError,
    FaultInjector,
    envelope_from_json,
)

log = logging.getLogger("hub.rabbitmq")


@dataclass(frozen=True, slots=True)
class RabbitOptions:
    """How the bus uses the broker; ``RCM_REALTIME_BUS_*`` variables set these."""

    exchange: str = "rcm.realtime.events"
    queue_prefix: str = "rcm.realtime.replica."
    max_length: int = 100_000
    message_ttl_s: float = 300.0
    prefetch: int = 256
    persistent: bool = True
    queue_expires_s: float | None = None
    heartbeat_s: int = 15
    connect_timeout_s: float = 5.0
    confirm_timeout_s: float = 10.0
    reconnect_initial_s: float = 0.25
    reconnect_max_s: float = 15.0
    backlog_refresh_s: float = 1.0

    def queue_name(self, replica_id: str) -> str:
        return self.queue_prefix + replica_id

    def queue_arguments(self) -> dict[str, Any]:
        arguments: dict[str, Any] = {
            "x-max-length": self.max_length,
            "x-overflow": "drop-head",
            "x-message-ttl": round(self.message_ttl_s * 1000),
        }
        if self.queue_expires_s is not None:
            arguments["x-expires"] = round(self.queue_expires_s * 1000)
        return arguments


def check_amqp_url(url: str) -> URL:
    """The URL, parsed; a ConfigError names what is wrong with it."""
    try:
        parsed = URL(url)
    except ValueError as error:
        raise ConfigError(f"bus URL is not a URL ({error})") from error
    if parsed.scheme not in ("amqp", "amqps") or not parsed.host:
        raise ConfigError("bus URL must look like amqp://user:password@host:5672/vhost")
    return parsed


def safe_url(url: URL) -> str:
    """The URL without its credentials, for logs and messages."""
    return str(url.with_user(None).with_query(None))


def describe(error: BaseException | None) -> str:
    if error is None:
        return "the connection closed"
    text = str(error) or type(error).__name__
    return f"{type(error).__name__}: {text}"[:300]


def permanent_reason(error: BaseException) -> str | None:
    """Why retrying cannot help, or None when the failure may pass by itself."""
    if isinstance(
        error, aiormq.exceptions.ProbableAuthenticationError
    ) or "ACCESS_REFUSED" in str(error):
        return "the broker refused the user name or password in the bus URL"
    if isinstance(error, aiormq.exceptions.ConnectionNotAllowed):
        return f"the broker does not allow this user on the virtual host ({error})"
    if isinstance(error, aiormq.exceptions.ChannelPreconditionFailed):
        return (
            f"the broker refused the topology ({error}); a queue or exchange of that "
            "name exists with other arguments: delete it, or use its settings"
        )
    if isinstance(error, aiormq.exceptions.ChannelAccessRefused):
        return f"the broker refused access to the exchange or queue ({error})"
    return None


class RabbitSubscription(QueuedSubscription):
    """One replica's queue: consumed with a prefetch, acknowledged after dispatch."""

    def __init__(
        self, bus: RabbitBus, replica_id: str, injector: FaultInjector
    ) -> None:
        super().__init__(replica_id, injector)
        self.queue_name = bus.options.queue_name(replica_id)
        self.undecodable = 0
        self._bus = bus
        self._channel: AbstractChannel | None = None
        self._underlay: aiormq.abc.AbstractChannel | None = None
        self._generation = 0
        self._ready = 0
        self._refresher: asyncio.Task[None] | None = None

    @property
    def live(self) -> bool:
        return super().live and self._underlay is not None

    @property
    def attached(self) -> bool:
        return self._underlay is not None

    @property
    def down_reason(self) -> str | None:
        if self._underlay is None and not self._closed:
            return f"RabbitMQ: {self._bus.down_reason}"
        return super().down_reason

    def backlog(self) -> int:
        """The broker's count of ready messages (refreshed in the background) plus
        those delivered here and not yet dispatched."""
        return self._ready + len(self._queue)

    async def _attach(
        self,
        connection: AbstractConnection,
        generation: int,
        lost: Callable[[str], None],
    ) -> None:
        options = self._bus.options
        channel = await connection.channel(publisher_confirms=False)
        channel.close_callbacks.add(
            functools.partial(self._channel_closed, lost, generation)
        )
        await channel.set_qos(prefetch_count=options.prefetch)
        exchange = await channel.declare_exchange(
            options.exchange, aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(
            self.queue_name, durable=True, arguments=options.queue_arguments()
        )
        await queue.bind(exchange, routing_key="#")
        self._ready = queue.declaration_result.message_count or 0
        underlay = await channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(
            functools.partial(self._consumer_cancelled, lost)
        )
        # Set before consuming: deliveries may arrive before basic.consume returns.
        self._channel = channel
        self._underlay = underlay
        self._generation = generation
        # The hot path talks to aiormq's channel directly: aio-pika's message
        # wrapper and its extra task per delivery cost more than the dispatch.
        await underlay.basic_consume(
            self.queue_name,
            functools.partial(self._on_message, generation),
            no_ack=False,
        )
        if self._refresher is None:
            self._refresher = asyncio.create_task(
                self._refresh_backlog(), name=f"backlog-{self.replica_id}"
            )

    def _detach(self) -> None:
        """The connection is gone: not live; what waits here is still dispatched,
        and its redelivered copies are skipped."""
        self._channel = None
        self._underlay = None

    def _channel_closed(
        self,
        lost: Callable[[str], None],
        generation: int,
        sender: Any,
        error: BaseException | None = None,
    ) -> None:
        if self._closed or generation != self._generation:
            return
        lost(f"the channel of {self.queue_name} closed ({describe(error)})")

    def _consumer_cancelled(self, lost: Callable[[str], None], frame: Any) -> None:
        if not self._closed:
            lost(f"the broker cancelled the consumer of {self.queue_name}")

    async def _on_message(
        self, generation: int, message: aiormq.abc.DeliveredMessage
    ) -> None:
        if self._closed or generation != self._generation:
            # Unacknowledged: the broker requeues it when this channel closes.
            return
        tag = getattr(message.delivery, "delivery_tag", None) or 0
        try:
            envelope = envelope_from_json(
                json.loads(message.body),
                catalog=self._bus.catalog,
                member=None,
                new_id=new_event_id,
                now_iso=now_iso,
            )
        except (ValueError, EnvelopeError) as error:
            self.undecodable += 1
            log_event(
                logging.WARNING,
                "bus_message_refused",
                replica=self.replica_id,
                queue=self.queue_name,
                message_id=message.header.properties.message_id,
                reason=describe(error),
            )
            await self._ack(tag, generation, multiple=False)
            return
        if self._arrive(envelope, tag, generation):
            self._arrived()
        else:
            await self._ack(tag, generation, multiple=False)

    async def _settle(self, taken: list[Waiting]) -> None:
        generation = self._generation
        for _, _, tag, item_generation in reversed(taken):
            if item_generation == generation:
                # Everything before it on this channel was handed out or taken.
                await self._ack(tag, generation, multiple=True)
                return

    async def _ack(self, tag: int, generation: int, *, multiple: bool) -> None:
        underlay = self._underlay
        if underlay is None or generation != self._generation or tag == 0:
            return
        # A failed ack means a lost channel: the broker redelivers, and the copies
        # are skipped as already handed out.
        with contextlib.suppress(
            aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError
        ):
            await underlay.basic_ack(tag, multiple=multiple, wait=False)

    async def _refresh_backlog(self) -> None:
        interval = self._bus.options.backlog_refresh_s
        while not self._closed:
            await asyncio.sleep(interval)
            underlay = self._underlay
            if underlay is None:
                continue
            # A failure here is a lost channel, which the supervisor handles.
            with contextlib.suppress(
                aiormq.exceptions.AMQPError,
                aiormq.exceptions.ChannelInvalidStateError,
                TimeoutError,
            ):
                declared = await underlay.queue_declare(
                    self.queue_name, passive=True, timeout=interval * 5
                )
                self._ready = declared.message_count or 0

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        channel = self._channel
        self._detach()
        if channel is not None:
            # What was delivered and not acknowledged goes back to the queue.
            with contextlib.suppress(Exception):
                await channel.close()
        await super().close()


class RabbitBus(FaultBoard):
    """The bus on RabbitMQ; see the module's description."""

    def __init__(
        self,
        url: str,
        *,
        catalog: Catalog,
        options: RabbitOptions | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(seed=seed)
        self.options = options or RabbitOptions()
        parsed = check_amqp_url(url)
        if "heartbeat" not in parsed.query:
            parsed = parsed.update_query(heartbeat=self.options.heartbeat_s)
        self._url = parsed
        self.where = safe_url(parsed)
        self.catalog = catalog
        self.connects = 0
        self.attempts = 0
        self._subscriptions: dict[str, RabbitSubscription] = {}
        self._connection: AbstractConnection | None = None
        self._publisher: aiormq.abc.AbstractChannel | None = None
        self._generation = 0
        self._supervisor: asyncio.Task[None] | None = None
        self._first_attempt: asyncio.Future[BaseException | None] | None = None
        self._lost: asyncio.Future[str] | None = None
        self._attach_lock = asyncio.Lock()
        self._down_since: float | None = None
        self._reason: str | None = None
        self._permanent_logged: str | None = None
        self._closing = False
        self._jitter = random.Random()

    @property
    def connected(self) -> bool:
        return self._publisher is not None

    @property
    def down_reason(self) -> str | None:
        """Why the bus is not connected, or None while it is."""
        return None if self.connected else (self._reason or "connecting")

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Make the first connection attempt; later ones happen in the background.

        Raises ConfigError when retrying cannot help (refused credentials, a queue
        that exists with other arguments). An unreachable broker is not an error
        here: the bus keeps trying, and its subscriptions are not live meanwhile.
        """
        if self._closing:
            raise BusUnavailable("the RabbitMQ bus is closed")
        if self._supervisor is None:
            self._first_attempt = asyncio.get_running_loop().create_future()
            self._supervisor = asyncio.create_task(
                self._supervise(), name="rabbitmq-bus"
            )
        assert self._first_attempt is not None
        error = await asyncio.shield(self._first_attempt)
        if error is not None:
            reason = permanent_reason(error)
            if reason is not None:
                raise ConfigError(f"RabbitMQ at {self.where}: {reason}") from error

    async def close(self) -> None:
        self._closing = True
        for subscription in list(self._subscriptions.values()):
            await subscription.close()
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        await self._drop_connection()

    async def interrupt(self) -> None:
        """Drop the connection as a network fault would (lab use): subscriptions
        stop being live and the bus reconnects by itself, as after any loss."""
        connection = self._connection
        if connection is not None:
            await connection.close()

    async def _supervise(self) -> None:
        failures = 0
        while not self._closing:
            self.attempts += 1
            try:
                await self._connect()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                first = self._first_attempt
                if first is not None and not first.done():
                    first.set_result(error)
                    if permanent_reason(error) is not None:
                        return
                delay = self._backoff(failures)
                failures += 1
                self._went_down(describe(error), delay, permanent_reason(error))
                await asyncio.sleep(delay)
                continue
            failures = 0
            first = self._first_attempt
            if first is not None and not first.done():
                first.set_result(None)
            self._came_up()
            assert self._lost is not None
            reason = await self._lost
            await self._drop_connection()
            delay = self._backoff(0)
            failures = 1
            self._went_down(reason, delay)
            await asyncio.sleep(delay)

    async def _connect(self) -> None:
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        on_lost = _resolver(lost)
        connection = await aio_pika.connect(
            self._url, timeout=self.options.connect_timeout_s
        )
        try:
            connection.close_callbacks.add(
                lambda sender, error=None: on_lost(
                    f"the connection to {self.where} closed ({describe(error)})"
                )
            )
            channel = await connection.channel(publisher_confirms=True)
            channel.close_callbacks.add(
                lambda sender, error=None: on_lost(
                    f"the publishing channel closed ({describe(error)})"
                )
            )
            await channel.declare_exchange(
                self.options.exchange, aio_pika.ExchangeType.TOPIC, durable=True
            )
            publisher = await channel.get_underlay_channel()
            async with self._attach_lock:
                generation = self._generation + 1
                self._generation = generation
                for subscription in list(self._subscriptions.values()):
                    if not subscription.closed:
                        await subscription._attach(connection, generation, on_lost)
                self._connection = connection
                self._publisher = publisher
                self._lost = lost
        except BaseException:
            with contextlib.suppress(Exception):
                await connection.close()
            raise

    async def _drop_connection(self) -> None:
        connection = self._connection
        self._connection = None
        self._publisher = None
        for subscription in self._subscriptions.values():
            subscription._detach()
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    def _backoff(self, failures: int) -> float:
        ceiling = min(
            self.options.reconnect_max_s,
            self.options.reconnect_initial_s * 2.0 ** min(failures, 30),
        )
        # Jitter spreads the replicas' reconnections after a broker restart.
        return ceiling * self._jitter.uniform(0.8, 1.0)

    def _replicas(self) -> str:
        return ",".join(sorted(self._subscriptions)) or "-"

    def _went_down(
        self, reason: str, retry_in_s: float, permanent: str | None = None
    ) -> None:
        self._reason = reason
        if self._down_since is None:
            # One WARNING per outage, with its cause; the attempts that follow
            # are DEBUG, unless one fails for a reason that will not pass alone.
            self._down_since = time.monotonic()
            log_event(
                logging.WARNING,
                "bus_disconnected",
                replica=self._replicas(),
                broker=self.where,
                reason=reason,
                retry_in_s=round(retry_in_s, 2),
            )
        elif permanent is not None and permanent != self._permanent_logged:
            self._permanent_logged = permanent
            log_event(
                logging.ERROR,
                "bus_reconnect_refused",
                replica=self._replicas(),
                broker=self.where,
                reason=permanent,
            )
        else:
            log.debug("reconnecting to %s failed again: %s", self.where, reason)

    def _came_up(self) -> None:
        self.connects += 1
        fields: dict[str, Any] = {
            "replica": self._replicas(),
            "broker": self.where,
            "exchange": self.options.exchange,
        }
        if self._down_since is not None:
            fields["down_s"] = round(time.monotonic() - self._down_since, 2)
            log_event(logging.INFO, "bus_reconnected", **fields)
        else:
            log_event(logging.INFO, "bus_connected", **fields)
        self._down_since = None
        self._reason = None
        self._permanent_logged = None

    # -- topic and subscriptions -----------------------------------------------------

    async def publish(self, envelopes: Sequence[Envelope]) -> None:
        """Publish and wait for the broker's confirms; BusUnavailable when the
        broker is unreachable or does not confirm (retrying with the same ids is
        safe: each replica skips ids it has already handed out)."""
        if not envelopes:
            return
        if self._supervisor is None:
            await self.start()
        publisher = self._publisher
        if publisher is None:
            raise BusUnavailable(
                f"the RabbitMQ bus is not connected ({self.down_reason}); retry shortly"
            )
        exchange = self.options.exchange
        timeout = self.options.confirm_timeout_s
        mode = 2 if self.options.persistent else 1
        results = await asyncio.gather(
            *(
                publisher.basic_publish(
                    json.dumps(envelope.to_json(), separators=(",", ":")).encode(),
                    exchange=exchange,
                    routing_key=f"{envelope.tenant_id}.{envelope.type}",
                    properties=aiormq.spec.Basic.Properties(
                        content_type="application/json",
                        delivery_mode=mode,
                        message_id=envelope.id,
                    ),
                    timeout=timeout,
                )
                for envelope in envelopes
            ),
            return_exceptions=True,
        )
        failures = [r for r in results if not isinstance(r, aiormq.spec.Basic.Ack)]
        if failures:
            first = failures[0]
            cause = (
                describe(first)
                if isinstance(first, BaseException)
                else "the broker refused them"
            )
            raise BusUnavailable(
                f"RabbitMQ did not confirm {len(failures)} of {len(envelopes)} "
                f"events ({cause}); retry with the same ids"
            ) from (first if isinstance(first, BaseException) else None)

    async def subscribe(self, replica_id: str) -> RabbitSubscription:
        existing = self._subscriptions.get(replica_id)
        if existing is not None and not existing.closed:
            raise ValueError(f"replica {replica_id!r} already has a live subscription")
        subscription = RabbitSubscription(self, replica_id, self.injector(replica_id))
        # Registered first: a connection made from here on attaches it.
        self._subscriptions[replica_id] = subscription
        self._track(subscription)
        try:
            await self.start()
        except ConfigError:
            del self._subscriptions[replica_id]
            await subscription.close()
            raise
        async with self._attach_lock:
            connection, lost = self._connection, self._lost
            if (
                connection is None
                or lost is None
                or lost.done()
                or subscription.attached
            ):
                return subscription
            try:
                await subscription._attach(
                    connection, self._generation, _resolver(lost)
                )
            except Exception as error:
                reason = permanent_reason(error)
                if reason is not None:
                    del self._subscriptions[replica_id]
                    await subscription.close()
                    raise ConfigError(
                        f"RabbitMQ at {self.where}, queue "
                        f"{subscription.queue_name}: {reason}"
                    ) from error
                _resolver(lost)(f"subscribing {replica_id} failed ({describe(error)})")
        return subscription

    def subscription(self, replica_id: str) -> RabbitSubscription | None:
        return self._subscriptions.get(replica_id)


def _resolver(lost: asyncio.Future[str]) -> Callable[[str], None]:
    def resolve(reason: str) -> None:
        if not lost.done():
            lost.set_result(reason)

    return resolve
