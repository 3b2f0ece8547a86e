"""End-to-end test harness: a test CA, a fake provider upstream, the real keyrelay process."""
