"""The gateway's API keys: a TOML or JSON file (``--keys`` or ``$SONIC_GATEWAY_KEYS``) that maps each secret key to
the ledger account it bills and the pricing tier it is sold on::

    [keys."sk-studio-0123"]
    account = "studio"
    tier = "pro"
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import SonicInputError
from ..paths import read_config

KEYS_ENV = "SONIC_GATEWAY_KEYS"
MIN_KEY_LENGTH = 12


@dataclass(frozen=True)
class ApiKey:
    account: str
    tier: str


class KeyBook:
    def __init__(self, keys: dict[str, ApiKey]) -> None:
        self._keys = keys

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> "KeyBook":
        chosen = path or os.environ.get(KEYS_ENV)
        if not chosen:
            raise SonicInputError(f"no API keys: pass --keys FILE or set ${KEYS_ENV} (a TOML file of "
                                  '[keys."SECRET"] tables with account and tier)')
        file = Path(chosen).expanduser()
        table = read_config(file, "keys file", "json" if file.suffix.lower() == ".json" else "toml")
        entries = table.get("keys")
        if not isinstance(entries, dict) or not entries:
            raise SonicInputError(f"keys file {file}: no [keys.\"SECRET\"] table: add one per API key")
        keys = {}
        for secret, entry in entries.items():
            if len(secret) < MIN_KEY_LENGTH:
                raise SonicInputError(f"keys file {file}: a key is shorter than {MIN_KEY_LENGTH} characters: use "
                                      "long random keys")
            if not isinstance(entry, dict) or not all(isinstance(entry.get(name), str) and entry.get(name)
                                                      for name in ("account", "tier")):
                raise SonicInputError(f"keys file {file}: key {secret[:4]}... needs account and tier strings")
            keys[secret] = ApiKey(entry["account"], entry["tier"])
        return cls(keys)

    def find(self, secret: str) -> ApiKey | None:
        """The key's account and tier (compared in constant time), ``None`` for an unknown key."""
        found = None
        for known, entry in self._keys.items():
            if hmac.compare_digest(known.encode(), secret.encode()):
                found = entry
        return found
