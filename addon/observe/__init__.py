"""Seeing traffic: keyrelay's admin endpoints, the access log, metrics, masking every secret
before a flow is stored or shown, and offline replay.
"""
