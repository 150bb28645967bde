"""API keys with roles, rate limits, and the gate that applies them to every request."""
