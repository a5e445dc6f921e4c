"""Probe URLs as they may be shown: credentials, query values and fragments masked."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

MASK = "***"


def mask_url(url: str) -> str:
    """``url`` safe to show: user name, password, query values, bare query tokens and the
    fragment become ``***``.

    Probe URLs may carry credentials (``https://user:secret@host/health?token=…``); the
    admin, the status endpoint and the ``circuits`` command show only this form.
    """
    if not url:
        return ""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return MASK
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    if parts.username is not None or parts.password is not None:
        netloc = f"{MASK}@{netloc}"
    # A parameter keeps its name and loses its value; a bare token (``?SuperSecretApiKey``,
    # no ``=``) is all value.
    query = "&".join(
        f"{item.split('=', 1)[0]}={MASK}" if "=" in item else MASK
        for item in parts.query.split("&")
        if item
    )
    fragment = MASK if parts.fragment else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))
