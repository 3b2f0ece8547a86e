"""Which provider a request is for, where it may go, and what it carries upstream."""
