"""Who may spend the keys, how fast, and on what: authentication, rate limits, body rules."""
