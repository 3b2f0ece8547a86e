"""Real-client conformance suite: the providers' own client libraries against keyrelay."""
