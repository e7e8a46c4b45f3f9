"""Where things are: local or remote paths, as plain URLs. Import-light (operators import it at parse time)."""

from __future__ import annotations

from typing import Any

LOCAL_PROTOCOLS = ("", "file", "local")


def is_local(path: Any) -> bool:
    """Whether an ObjectStoragePath is on the local filesystem."""
    return path.protocol in LOCAL_PROTOCOLS


def is_local_url(url: str) -> bool:
    """Whether a destination string names the local filesystem: a plain path, or a local scheme."""
    return "://" not in url or url.split("://", 1)[0] in LOCAL_PROTOCOLS


def path_url(path: Any) -> str:
    """An ObjectStoragePath as a plain URL (local: the absolute path), without the connection id its
    ``str()`` shows."""
    if is_local(path):
        return "/" + str(path.path).lstrip("/")
    return f"{path.protocol}://{path.bucket}/{path.key}"
