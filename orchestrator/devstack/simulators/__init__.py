"""Built-in simulators: an OpenAI-compatible LLM provider and an HTTP tool server.

The demo, the tests and the benchmarks run against them; both enforce what the real
services would (rate limits, latency, errors, outages) and report exact counts.
"""
