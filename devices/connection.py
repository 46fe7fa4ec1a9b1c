"""Broker addresses and paho-mqtt clients, set up one way for every part of Illuminate."""

from __future__ import annotations

import errno
import functools
import os
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit
from urllib.request import getproxies

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

_SCHEMES = {"mqtt": (1883, False), "mqtts": (8883, True)}


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """`mqtt://[user[:password]@]host[:port]` or `mqtts://...` (TLS)."""
        parts = urlsplit(url)
        if parts.scheme not in _SCHEMES:
            raise ValueError(f"broker url {url!r}: the scheme must be mqtt:// or mqtts://")
        if not parts.hostname:
            raise ValueError(f"broker url {url!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise ValueError(f"broker url {url!r}: give only scheme, host and port")
        default_port, tls = _SCHEMES[parts.scheme]
        try:
            port = parts.port or default_port
        except ValueError:
            raise ValueError(f"broker url {url!r}: bad port") from None
        return cls(
            host=parts.hostname,
            port=port,
            tls=tls,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def with_credentials(self, username: str | None, password: str | None) -> BrokerAddress:
        return BrokerAddress(
            self.host,
            self.port,
            self.tls,
            username if username is not None else self.username,
            password if password is not None else self.password,
        )

    def redacted(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        user = f"{self.username}@" if self.username else ""
        return f"{scheme}://{user}{self.host}:{self.port}"


def new_client(
    address: BrokerAddress,
    client_id: str,
    *,
    will: tuple[str, bytes] | None = None,
    ca_file: str | None = None,
    max_queued_messages: int = 1000,
    client_class: type[mqtt.Client] = mqtt.Client,
) -> mqtt.Client:
    """A paho 2.x client (MQTT 3.1.1), credentials, TLS and a retained last will set."""
    client = client_class(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if address.username is not None:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set(ca_certs=ca_file, cert_reqs=ssl.CERT_REQUIRED)
    if will is not None:
        client.will_set(will[0], will[1], qos=1, retain=True)
    client.max_queued_messages_set(max_queued_messages)
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


@functools.cache
def _mqtt_proxy_set() -> bool:
    """Whether the environment names an MQTT proxy (paho then connects through it).

    Read once: scanning the environment costs more than a whole local connect.
    """
    return "mqtt" in getproxies()


class LoopClient(mqtt.Client):
    """A paho client for an external event loop: its TCP connect does not block.

    paho opens the TCP connection with a blocking `socket.create_connection`, which
    would stall every device on the loop while one broker address is slow to answer.
    This client starts the connect and returns at once; the CONNECT packet waits in
    paho's queue until the socket is writable, and a failed connect surfaces as an
    error on the first read or write. TLS (its handshake), proxies and unix sockets
    keep paho's own blocking path.
    """

    _address_turn = 0

    def try_next_address(self) -> None:
        """The last attempt failed: the next one uses the host's next address, if any.

        A name such as `localhost` may resolve to ::1 and 127.0.0.1 while the broker
        listens on one of them only; paho's blocking connect tries each in turn.
        """
        self._address_turn += 1

    def _create_socket_connection(self) -> socket.socket:
        if self._ssl or _mqtt_proxy_set():
            return super()._create_socket_connection()
        found = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, addr = found[self._address_turn % len(found)]
        sock = socket.socket(family, kind, proto)
        try:
            # MQTT sends small packets back to back (CONNECT, birth, SUBSCRIBE, state):
            # with Nagle each would wait for the broker's delayed ACK
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            err = sock.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                raise OSError(err, os.strerror(err))
        except BaseException:
            sock.close()
            raise
        return sock
