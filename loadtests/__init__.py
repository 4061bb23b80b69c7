"""Locust load tests for the realtime hub: real SSE connections, reconciled against
the hubs' counters by ``rcm-realtime load``. They talk HTTP to hubs and import
nothing of the project but its public SSE parser (``hub.sse``)."""
