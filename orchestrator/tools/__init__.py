"""Tools: declared with a timeout and a fallback, called through one registry."""
