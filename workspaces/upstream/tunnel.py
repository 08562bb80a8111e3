"""A CONNECT tunnel through an HTTP proxy for the native client (workspaces.upstream.proxies
says which proxy and why the target is an address the SSRF guard checked).

The proxy's own address is not guarded: the operator configured it. Its answer head is capped
like an upstream's, and anything but a 2xx refuses the tunnel with the proxy's status.
"""

from __future__ import annotations

import asyncio
import ssl

from workspaces.upstream.connection import MAX_HEAD_BYTES
from workspaces.upstream.proxies import Proxy


class _TunnelHandshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT, then hands the transport over."""

    def __init__(self) -> None:
        self.answer: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            if not self.answer.done():
                self.answer.set_result(self.buffer)
        elif len(self.buffer) > MAX_HEAD_BYTES and not self.answer.done():
            self.answer.set_exception(ConnectionRefusedError("the proxy's answer to CONNECT is too long"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(ConnectionResetError("the proxy closed the connection during CONNECT"))


async def open_tunnel(
    loop: asyncio.AbstractEventLoop,
    proxy: Proxy,
    address: str,
    port: int,
    protocol: asyncio.Protocol,
    ssl_context: ssl.SSLContext | None,
    server_hostname: str,
) -> asyncio.Transport:
    """A transport to ``address:port`` through ``proxy``, speaking to ``protocol`` (TLS on top
    for https, verified against ``server_hostname``). OSError when the proxy refuses."""
    transport, handshake = await loop.create_connection(_TunnelHandshake, proxy.host, proxy.port)
    target = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    lines = [f"CONNECT {target} HTTP/1.1", f"Host: {target}"]
    if proxy.authorization:
        lines.append(f"Proxy-Authorization: {proxy.authorization}")
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        answer = await handshake.answer
        status = _status(answer)
        if not 200 <= status < 300:
            raise ConnectionRefusedError(f"the proxy {proxy.url} answered CONNECT with {status}")
        if ssl_context is not None:
            return await loop.start_tls(transport, protocol, ssl_context, server_hostname=server_hostname)
    except BaseException:
        transport.close()
        raise
    transport.set_protocol(protocol)
    return transport


def _status(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0].split(b" ")
    if len(line) < 2 or not line[0].startswith(b"HTTP/1.") or not line[1].isdigit():
        raise ConnectionRefusedError("the proxy's answer to CONNECT is not HTTP")
    return int(line[1])
