"""The network guard (tests/network_guard.py): the suite cannot reach another machine."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import network_guard
import pytest

PUBLIC = ("192.0.2.1", 443)  # TEST-NET-1 (RFC 5737): public address space, never routed


def test_guard_is_installed_for_the_suite():
    assert network_guard.installed()


@pytest.mark.parametrize("address", [PUBLIC, ("8.8.8.8", 53), ("2001:db8::1", 80, 0, 0)])
def test_connect_to_a_public_address_raises(address):
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)  # should the guard fail, fail fast instead of hanging
        with pytest.raises(network_guard.NetworkAccessError, match="network access blocked"):
            sock.connect(address)
        with pytest.raises(network_guard.NetworkAccessError):
            sock.connect_ex(address)


def test_lookups_datagrams_and_urls_raise():
    with pytest.raises(network_guard.NetworkAccessError, match="host name 'pypi.org'"):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(network_guard.NetworkAccessError):
        socket.gethostbyname("example.com")
    with pytest.raises(network_guard.NetworkAccessError):
        socket.create_connection(PUBLIC, timeout=1.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(network_guard.NetworkAccessError):
            udp.sendto(b"x", ("8.8.8.8", 53))
    # Not an OSError: urllib must not turn it into a quiet URLError.
    with pytest.raises(network_guard.NetworkAccessError):
        urllib.request.urlopen("https://raw.githubusercontent.com/irn-book/irn/main/README.md")


def test_this_machine_stays_reachable():
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with socket.create_connection(("localhost", port), timeout=5) as client:
            peer, _ = server.accept()
            with peer:
                client.sendall(b"ping")
                assert peer.recv(4) == b"ping"
    a, b = socket.socketpair()  # AF_UNIX: what Jupyter and multiprocessing may use
    with a, b:
        a.sendall(b"ok")
        assert b.recv(2) == b"ok"
    assert network_guard.is_local(socket.AF_INET6, ("::1", 80, 0, 0))
    assert network_guard.is_local(socket.AF_INET, ("0.0.0.0", 80))
    assert not network_guard.is_local(socket.AF_INET6, ("::ffff:8.8.8.8", 80, 0, 0))


def test_sitecustomize_guards_child_processes():
    # How notebook kernels get the guard: PYTHONPATH=tests/netguard (see its docstring).
    folder = Path(__file__).with_name("netguard")
    env = dict(os.environ, PYTHONPATH=str(folder))
    probe = "import socket; socket.create_connection(('192.0.2.1', 443), timeout=1)"
    proc = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert proc.returncode != 0 and "NetworkAccessError" in proc.stderr, proc.stderr
