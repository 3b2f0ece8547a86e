"""Where provider keys come from: environment, secret files, commands; per-tenant keys; pools
of keys with cool-down. `addon.keys.KeyStore` puts these together for relay.py."""

from addon.keysources.ids import key_id

__all__ = ["key_id"]
