"""keyrelay: a key-injecting reverse proxy for AI providers, as a mitmproxy addon."""
