"""Static bearer tokens, kept only as SHA-256 hashes and compared in constant time.

The source (a file or an environment variable) holds entries `NAME:SHA256HEX`, one per line
or separated by commas; `#` starts a comment. NAME becomes the caller's identity.
Make a new token with:  python -m addon.auth.tokens NAME
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import sys

from addon.auth.identity import Identity

_ENTRY = re.compile(r"([A-Za-z0-9][A-Za-z0-9._@-]*):([0-9a-fA-F]{64})")


class TokenError(ValueError):
    """A malformed token list; the message names the entry number, never a hash."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    def __init__(self, text: str) -> None:
        self._entries: list[tuple[str, bytes]] = []
        entries = [e.strip() for line in text.splitlines() for e in line.split("#")[0].split(",")]
        for number, entry in enumerate((e for e in entries if e), start=1):
            match = _ENTRY.fullmatch(entry)
            if not match:
                raise TokenError(f"entry {number} is not NAME:SHA256HEX")
            self._entries.append((match[1], bytes.fromhex(match[2])))
        # No entry is a valid list: removing the last token locks its holder out (revocation).

    def __len__(self) -> int:
        return len(self._entries)

    def identify(self, token: str) -> Identity | None:
        digest = hashlib.sha256(token.encode()).digest()
        found: str | None = None
        for name, stored in self._entries:  # every entry is compared: no early exit
            if hmac.compare_digest(digest, stored) and found is None:
                found = name
        return Identity("token", found) if found is not None else None


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not _ENTRY.fullmatch(f"{argv[1]}:{'0' * 64}"):
        print("usage: python -m addon.auth.tokens NAME", file=sys.stderr)
        return 2
    token = "kr_" + secrets.token_urlsafe(32)
    print(f"token (give it to the client, keep it nowhere else): {token}")
    print(f"entry (add it to the tokens file or variable):      {argv[1]}:{token_hash(token)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
