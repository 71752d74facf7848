"""No network at run time: sockets may reach this machine only.

The book and its tests must run offline (everything they read ships with the repository or a
package). Once :func:`install` has run, a Python socket may connect or send only to an AF_UNIX
address, a loopback address (127.0.0.0/8, ::1; ``localhost``), or the unspecified address (which
means this host); name lookups are allowed for ``localhost`` and this machine's own name. Every
other attempt raises :class:`NetworkAccessError` *before* anything leaves the machine, so a test
that tries the network fails loudly instead of hanging or passing by luck on a connected machine.

Jupyter kernels (ZeroMQ over loopback TCP), torch.distributed (gloo, its TCP store on localhost)
and pytest-xdist keep working. Native code that opens sockets outside Python is not covered.

``tests/conftest.py`` installs it for the whole test suite; ``tests/netguard/sitecustomize.py``
installs it in every Python process started with ``PYTHONPATH=tests/netguard`` (notebook kernels).
"""

from __future__ import annotations

import ipaddress
import socket

__all__ = ["NetworkAccessError", "install", "installed", "is_local", "uninstall"]

_ORIGINAL: dict[str, object] = {}
_INET = (socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET))


class NetworkAccessError(RuntimeError):
    """A socket tried to reach another machine while the network guard was installed.

    A RuntimeError, not an OSError: code that treats OSError as "offline, fall back" must not
    swallow it, the attempt itself is the defect.
    """


def _local_names() -> set[str]:
    names = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}
    try:
        names.add(socket.gethostname().lower())
    except OSError:
        pass
    return names


def _local_host(host) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip("[]").split("%")[0].lower()  # "[::1]", "fe80::1%eth0"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host in _local_names()
    if getattr(ip, "ipv4_mapped", None) is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback or ip.is_unspecified


def is_local(family: int, address) -> bool:
    """True if a socket of ``family`` may connect or send to ``address``."""
    if family not in _INET:  # AF_UNIX, AF_NETLINK, ...: never leave the machine
        return True
    return _local_host(address[0] if isinstance(address, tuple) else address)


def _refuse(what: str, address) -> None:
    raise NetworkAccessError(
        f"network access blocked: {what} {address!r}. The book and its tests must run offline "
        "(tests/network_guard.py); only this machine (localhost, AF_UNIX) may be reached."
    )


def _connect(self, address):
    if not is_local(self.family, address):
        _refuse("connect to", address)
    return _ORIGINAL["connect"](self, address)


def _connect_ex(self, address):
    if not is_local(self.family, address):
        _refuse("connect to", address)
    return _ORIGINAL["connect_ex"](self, address)


def _sendto(self, data, *args):
    address = args[-1] if args else None
    if address is not None and not is_local(self.family, address):
        _refuse("send a datagram to", address)
    return _ORIGINAL["sendto"](self, data, *args)


def _getaddrinfo(host, *args, **kwargs):
    if not _local_host(host):
        _refuse("look up the host name", host)
    return _ORIGINAL["getaddrinfo"](host, *args, **kwargs)


def _gethostbyname(host):
    if not _local_host(host):
        _refuse("look up the host name", host)
    return _ORIGINAL["gethostbyname"](host)


def _gethostbyname_ex(host):
    if not _local_host(host):
        _refuse("look up the host name", host)
    return _ORIGINAL["gethostbyname_ex"](host)


_PATCHES = {
    "connect": (socket.socket, _connect),
    "connect_ex": (socket.socket, _connect_ex),
    "sendto": (socket.socket, _sendto),
    "getaddrinfo": (socket, _getaddrinfo),
    "gethostbyname": (socket, _gethostbyname),
    "gethostbyname_ex": (socket, _gethostbyname_ex),
}


def installed() -> bool:
    """True while the guard is installed."""
    return bool(_ORIGINAL)


def install() -> None:
    """Block non-local connections, datagrams and name lookups in this process (idempotent)."""
    if installed():
        return
    for name, (owner, patched) in _PATCHES.items():
        _ORIGINAL[name] = getattr(owner, name)
        setattr(owner, name, patched)


def uninstall() -> None:
    """Restore the original socket functions."""
    for name, (owner, _) in _PATCHES.items():
        if name in _ORIGINAL:
            setattr(owner, name, _ORIGINAL.pop(name))
