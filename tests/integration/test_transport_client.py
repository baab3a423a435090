"""The workers' broker channel keeps one Redis client for the commands kombu would build a
client for, one by one, and messages still go through it: published, delivered, acked."""

from __future__ import annotations

from kombu import Connection, Exchange, Queue

from config import Settings
from workers.transport import Transport


def test_one_client_serves_the_channel_and_a_message_goes_through(settings: Settings) -> None:
    queue = Queue("transport-client-test", Exchange("transport-client-test"),
                  routing_key="transport-client-test")
    with Connection(settings.redis_url, transport=Transport) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
            assert first.connection_pool is channel.pool
        given = object()
        with channel.conn_or_acquire(given) as passed:
            assert passed is given  # a caller's own client is used as given

        producer = conn.Producer(serializer="json")
        producer.publish({"n": 1}, exchange=queue.exchange, routing_key="transport-client-test",
                         declare=[queue])
        message = queue(channel).get(no_ack=False)
        assert message is not None and message.payload == {"n": 1}
        unacked = channel.client.hlen(channel.unacked_key)
        assert unacked == 1
        message.ack()
        assert channel.client.hlen(channel.unacked_key) == 0
        assert queue(channel).get(no_ack=False) is None


def test_a_new_pool_gets_a_new_client(settings: Settings) -> None:
    with Connection(settings.redis_url, transport=Transport) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as before:
            pass
        channel._pool = None  # what kombu does when it drops the channel's pool
        with channel.conn_or_acquire() as after:
            assert after is not before and after.connection_pool is channel.pool
