"""Free loopback ports for embedded servers and workers."""

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago. The caller binds it soon; a race loses only a retry."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
