"""Bytes on the wire: streaming, decoding, size limits, timeouts, early refusals."""
