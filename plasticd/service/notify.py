"""systemd's notify protocol (sd_notify(3)), spoken directly on $NOTIFY_SOCKET.

Under ``Type=notify`` the service manager waits for ``READY=1``; with
``WatchdogSec=`` it expects ``WATCHDOG=1`` pings more often than that;
``STATUS=`` lines show in ``systemctl status``; ``STOPPING=1`` announces a
clean shutdown. Outside systemd (no $NOTIFY_SOCKET) every call is a no-op.
``WatchdogSec=`` reaches the process as ``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``):
``watchdog_seconds`` reads it, and the heartbeat pings at least twice per period.
The protocol is one datagram per message; the only well-kept Python binding
(systemd-python) needs libsystemd headers to build, so we speak it ourselves.
"""

from __future__ import annotations

import os
import socket


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET")
        self._sock: socket.socket | None = None
        self._address = ""
        if address:
            self._address = "\0" + address[1:] if address.startswith("@") else address
            # non-blocking: a notify socket nobody reads (its queue holds net.unix.max_dgram_qlen, often 10,
            # datagrams) must never block the worker, nor the signal handler that sends STOPPING=1
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)

    @staticmethod
    def watchdog_seconds(environ: dict[str, str] | None = None) -> float | None:
        """systemd's watchdog period for this process (``$WATCHDOG_USEC``), or None when none is asked for
        (unset, malformed, zero, or meant for another pid per ``$WATCHDOG_PID``)."""
        env = os.environ if environ is None else environ
        try:
            usec = int(env.get("WATCHDOG_USEC", ""))
        except ValueError:
            return None
        pid = env.get("WATCHDOG_PID", "")
        if usec <= 0 or (pid and pid != str(os.getpid())):
            return None
        return usec / 1e6

    def send(self, *fields: str) -> bool:
        """Send ``KEY=value`` fields as one message; False if not under systemd or the send failed."""
        if self._sock is None:
            return False
        try:
            self._sock.sendto("\n".join(fields).encode(), self._address)
        except OSError:
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str) -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
