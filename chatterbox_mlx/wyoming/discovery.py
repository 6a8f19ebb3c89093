"""``--zeroconf``: advertise the server as ``_wyoming._tcp`` over mDNS, as Home
Assistant's add-ons do, so that Home Assistant offers it under Settings -> Devices &
services (Discovered). ``service_info`` builds the record (no network); ``Advertiser``
registers it with the ``zeroconf`` package and withdraws it at shutdown."""

from __future__ import annotations

import ipaddress
import socket

SERVICE_TYPE = "_wyoming._tcp.local."
MAX_NAME_BYTES = 63  # a DNS label
MDNS_GROUP = "224.0.0.251"


def default_name() -> str:
    host = socket.gethostname().split(".")[0] or "mac"
    return f"chatterbox-mlx-{host}"


def advertised_address(host: str) -> str:
    """The address to advertise for a server bound to ``host``: itself, or for a
    wildcard (``0.0.0.0``, ``::``, empty) the address this machine reaches the mDNS group
    from (a UDP socket's ``connect`` picks the route; it sends nothing)."""
    if host not in ("", "0.0.0.0", "::"):
        return host
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((MDNS_GROUP, 5353))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name.encode()) > MAX_NAME_BYTES or "." in name:
        raise ValueError(
            f"--zeroconf name {name!r}: give 1 to {MAX_NAME_BYTES} bytes without dots, "
            "e.g. --zeroconf chatterbox"
        )
    return name


def service_info(name: str, address: str, port: int):
    """The ``_wyoming._tcp`` record of the instance ``name`` at ``address:port``."""
    from zeroconf.asyncio import AsyncServiceInfo

    name = check_name(name)
    ipaddress.ip_address(address)  # ValueError for a host name
    return AsyncServiceInfo(
        SERVICE_TYPE,
        f"{name}.{SERVICE_TYPE}",
        parsed_addresses=[address],
        port=port,
        server=f"{name}.local.",
    )


class Advertiser:
    """Registers ``info`` while the server runs (``interfaces``: the addresses to announce
    on, default every interface)."""

    def __init__(self, info, interfaces=None):
        self.info = info
        self._interfaces = interfaces
        self._zeroconf = None

    async def start(self) -> None:
        from zeroconf import InterfaceChoice
        from zeroconf.asyncio import AsyncZeroconf

        self._zeroconf = AsyncZeroconf(interfaces=self._interfaces or InterfaceChoice.All)
        await self._zeroconf.async_register_service(self.info)

    async def close(self) -> None:
        if self._zeroconf is not None:
            zeroconf, self._zeroconf = self._zeroconf, None
            try:
                await zeroconf.async_unregister_service(self.info)
            finally:
                await zeroconf.async_close()
