"""Is a server there at all? One quick look before a client library that retries for half a minute.

The Hugging Face clients (huggingface_hub for models, datasets for data) retry a failed connection
for tens of seconds, printing each retry. On a machine without a network that is a long, noisy wait
for an error. So the callers look once, for a few seconds, whether the host answers; if not, they go
straight to the local cache (as with HF_HUB_OFFLINE=1), and a model or dataset not cached is one
clear error at once. No PyTorch here: data preparation uses it.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def reachable(url: str, timeout: float = 3.0) -> bool:
    """Does the host of `url` accept a TCP connection within `timeout` seconds (DNS included)?"""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname or "", port), timeout=timeout).close()
        return True
    except OSError:
        return False
