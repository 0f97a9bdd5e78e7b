"""Is a local port free, and `./clutch start`'s refusal when it is not."""

from __future__ import annotations

import errno
import socket

import typer


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def refuse_taken_ports(port: int, reverse: list[str] | None) -> None:
    """A port another program holds ends the command before mitmdump starts, saying which and how to
    choose another: mitmdump would log the bind error, load Clutch all the same, then exit."""
    wanted = [(port, "--port N, or CLUTCH_PORT=N")]
    wanted += [(int(entry.rpartition("@")[2]), f"--reverse {entry.rpartition('@')[0]}@N")
               for entry in reverse or []]
    for number, how in wanted:
        if not port_free(number):
            typer.echo(f"clutch: port {number} on 127.0.0.1 is taken by another program.\n"
                       f"Choose another port: {how}.", err=True)
            raise typer.Exit(1)
