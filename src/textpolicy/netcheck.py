"""Is a network service reachable? One quick TCP connection (name lookup + connect within a
few seconds).

Clients such as ``datasets``/``huggingface_hub`` or the tinker SDK retry an unreachable host
for ≈ 20 s or more, printing a line per retry; asking this first lets a command offline decide
at once and say so in one line.
"""

from __future__ import annotations

import socket
from urllib.parse import urlparse

DEFAULT_TIMEOUT_S = 3.0


def unreachable(url: str, timeout: float = DEFAULT_TIMEOUT_S) -> str | None:
    """None when ``url``'s host accepts a TCP connection, else why not (one short phrase).

    Behind a proxy (``HTTPS_PROXY`` and friends, not bypassed for the host) a direct connection
    says nothing about what the client will reach: None then, the client decides."""
    parsed = urlparse(url)
    if not parsed.hostname:
        return f"{url!r} is not a URL"
    if _proxied(parsed.scheme or "https", parsed.hostname):
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return _connect(parsed.hostname, port, timeout)


def _proxied(scheme: str, host: str) -> bool:
    import urllib.request

    proxies = urllib.request.getproxies()
    if not (proxies.get(scheme) or proxies.get("all")):
        return False
    return not urllib.request.proxy_bypass(host)


def _connect(host: str, port: int, timeout: float) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except TimeoutError:
        return f"no answer from {host}:{port} within {timeout:g} s"
    except OSError as exc:
        return f"{host}: {exc.strerror or exc}"
