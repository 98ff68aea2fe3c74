"""A socket guard for a whole process: every outbound connection and name lookup is refused and logged.

``install(log)`` replaces ``socket.socket.connect``/``connect_ex``/``sendto``,
``socket.create_connection`` and ``socket.getaddrinfo`` so that any attempt to reach
a host (loopback included) raises ``OSError(ENETUNREACH)`` and appends a line to
``log``. Unix-domain sockets, which never leave the machine, are let through. Used by
the no-network test, which runs the demo pipeline in a subprocess under it::

    python -c "import netguard; netguard.install('net.log'); ..."
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path
from typing import Any

OFFLINE = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def install(log: str | os.PathLike[str]) -> None:
    """Refuse and log every network access of this process from now on; set the hub's offline variables."""
    path = Path(log)
    os.environ.update(OFFLINE)

    def refuse(what: str, target: Any) -> OSError:
        with path.open("a", encoding="utf-8") as handle:
            handle.write(f"{what} {target!r}\n")
        return OSError(errno.ENETUNREACH, f"network access refused by the test's socket guard: {what} {target!r}")

    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex
    original_sendto = socket.socket.sendto

    def connect(self: socket.socket, address: Any) -> None:
        if self.family == getattr(socket, "AF_UNIX", None):
            return original_connect(self, address)
        raise refuse("connect", address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if self.family == getattr(socket, "AF_UNIX", None):
            return original_connect_ex(self, address)
        refuse("connect_ex", address)
        return errno.ENETUNREACH

    def sendto(self: socket.socket, *args: Any) -> int:
        if self.family == getattr(socket, "AF_UNIX", None):
            return original_sendto(self, *args)
        raise refuse("sendto", args[-1])

    def create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
        raise refuse("create_connection", address)

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> list[Any]:
        raise refuse("getaddrinfo", host)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = sendto  # type: ignore[method-assign, assignment]
    socket.create_connection = create_connection  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
