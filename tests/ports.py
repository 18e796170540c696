"""Ports for servers the tests start on 127.0.0.1, free of the bind-then-release race.

The usual trick (bind port 0, read the number, close, hand it to a server)
races twice: the kernel may give the same number to the next bind(0), and any
outgoing connection on the machine may take it as its ephemeral source port
before the server binds. TensorFlow's gRPC server does not set SO_REUSEPORT,
so a port cannot be held open for it either.

So the ports handed out here lie *below* the kernel's ephemeral range
(/proc/sys/net/ipv4/ip_local_port_range, 32768-60999 by default): neither
bind(0) nor an outgoing connection ever picks them. Each is checked to be
bindable now and is never handed out twice by this process. What remains is
a collision with another program that picks fixed ports in the same range,
which a random choice among ~12,000 makes unlikely.

Under pytest-xdist (pytest.ini) each worker draws from its own share of that
range, so two workers can never hand out the same port.

Servers the tests write themselves bind port 0 and report the port they got;
`free_port` is for servers that must be told their port in advance
(TF_CONFIG's worker addresses, the GCS emulator). `refusing_socket` holds a
port where nothing listens, for tests of a server that is down or late.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from typing import Iterator

_LOWEST = 20000  # above the well-known and most registered service ports
_handed_out: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
  try:
    with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as f:
      low, high = (int(x) for x in f.read().split())
    return low, high
  except (OSError, ValueError):
    return 32768, 60999  # Linux's default


def _bindable(port: int) -> bool:
  with socket.socket() as s:
    try:
      s.bind(("127.0.0.1", port))
    except OSError:
      return False
  return True


def _this_workers_share(ports: range) -> range:
  """`ports`, or under pytest-xdist the slice of it that belongs to this worker (gw0, gw1, ...)."""
  worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT")
  if not (worker.startswith("gw") and count):
    return ports
  index, count = int(worker[2:]), int(count)
  size = len(ports) // count
  return ports[index * size:(index + 1) * size]


def free_port() -> int:
  """A port on 127.0.0.1 that nothing listens on and no ephemeral bind will take."""
  low, high = _ephemeral_range()
  # Below the ephemeral range if there is room; otherwise above it.
  candidates = _this_workers_share(
      range(_LOWEST, low) if low - _LOWEST >= 1000 else range(high + 1, 65536))
  for _ in range(200):
    port = random.choice(candidates)
    if port not in _handed_out and _bindable(port):
      _handed_out.add(port)
      return port
  raise RuntimeError(f"no free port among {candidates} after 200 tries")


@contextlib.contextmanager
def refusing_socket() -> Iterator[socket.socket]:
  """A socket bound on 127.0.0.1 that does not listen: connecting to its port is refused.

  While it is held nothing else can take the port, as it could a port number
  merely found free. A server can later listen() on this very socket
  (StandIn.start(rest_socket=...)), or, for gRPC, which cannot adopt a socket,
  bind the port beside it: both set SO_REUSEPORT, and connections then go only
  to the listening one.
  """
  sock = socket.socket()
  sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
  sock.bind(("127.0.0.1", 0))
  try:
    yield sock
  finally:
    sock.close()
