"""CORS for browsers on other origins: preflight answers, refusals and response headers."""
