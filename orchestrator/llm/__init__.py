"""The LLM gateway: OpenAI-compatible chat calls, their keys and their limits."""
