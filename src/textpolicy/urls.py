"""Service URLs: credentials in them never get written, and where a Tinker key may go.

* :func:`redact_url` replaces the userinfo of every URL in a text
  (``http://user:tml-…@host`` → ``http://<redacted>@host``); config.json, manifest.json,
  run_commands.sh, campaign.toml, error lines and the runner's messages pass through it.
* :func:`is_loopback_host` decides "this machine" from the host as written, never by
  resolving it (a name's DNS answer can change between the check and the connection): only
  ``localhost`` and loopback IP addresses in standard notation (``127.0.0.0/8``, ``::1``,
  ``::ffff:127.x.y.z``) count. Anything else is another host, including names that happen to
  resolve to 127.0.0.1 and shorthand such as ``127.1`` (which the tests use as a stand-in for a
  foreign host, reaching a listener on 127.0.0.1).
* :func:`is_tinker_host`: Tinker's own service (``thinkingmachines.dev`` /
  ``thinkingmachines.ai`` and their subdomains).
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlparse

REDACTED = "<redacted>"
TINKER_DOMAINS: tuple[str, ...] = ("thinkingmachines.dev", "thinkingmachines.ai")

_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://)[^/?#\s@\"']+@")


def redact_url(text: str) -> str:
    """``text`` with the userinfo of every ``scheme://user:pass@host`` replaced."""
    return _USERINFO.sub(lambda m: f"{m.group(1)}{REDACTED}@", text)


def url_host(url: str) -> str:
    """The host of ``url``, lower-case ("" when it has none)."""
    try:
        return (urlparse(url).hostname or "").lower()
    except ValueError:
        return ""


def is_loopback_host(host: str) -> bool:
    """Whether ``host`` (as written, not resolved) names this machine."""
    host = host.lower().strip("[]")
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return bool(address.is_loopback or (mapped is not None and mapped.is_loopback))


def is_tinker_host(host: str) -> bool:
    """Whether ``host`` is Tinker's own service."""
    host = host.lower().rstrip(".")
    return any(host == d or host.endswith("." + d) for d in TINKER_DOMAINS)
