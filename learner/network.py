"""Which network interface a process's gloo groups use.

Gloo binds to the address the host's name resolves to unless GLOO_SOCKET_IFNAME names an
interface; on hosts whose name resolves to 127.0.1.1 (a Debian/Ubuntu default) that is loopback,
and a group spanning nodes then times out. The interface that carries the node's own IP (Ray's
node IP, the address the other members dial) is the one that reaches them.
"""
from __future__ import annotations

import ipaddress
import os
import socket
from typing import MutableMapping

import psutil

GLOO_ENV = "GLOO_SOCKET_IFNAME"


def interface_for(ip: str) -> str | None:
    """The name of the interface that carries `ip` (IPv4 or IPv6), None if no interface does."""
    want = ipaddress.ip_address(ip)
    for name, addrs in psutil.net_if_addrs().items():
        for a in addrs:
            if a.family in (socket.AF_INET, socket.AF_INET6) and ipaddress.ip_address(a.address.split("%")[0]) == want:
                return name
    return None


def use_interface_for_gloo(ip: str, environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Point gloo groups created after this call at the interface carrying `ip`, unless the user
    set GLOO_SOCKET_IFNAME; returns the interface gloo will use (None: its own hostname lookup)."""
    if not environ.get(GLOO_ENV):
        interface = interface_for(ip)
        if interface is not None:
            environ[GLOO_ENV] = interface
    return environ.get(GLOO_ENV)
