"""A real `gcp-storage-emulator` process, and a proxy that injects GCS faults in front of it.

google-cloud-storage honours STORAGE_EMULATOR_HOST, so the trainer's GCS code
(trainer/gcs.py) runs unchanged against the emulator over real sockets.
Failures the emulator cannot produce by itself (a 403, a copy that fails
halfway) come from `FaultProxy`, a real HTTP proxy that forwards every request
and answers chosen ones with an error instead.

conftest.py exposes `emulator` and `bucket` as fixtures.
"""

from __future__ import annotations

import http.client
import http.server
import importlib.util
import json
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

import pytest

from ports import free_port

# The emulator must be told its port, and does not report the one it got for
# --port=0. A port from ports.free_port() can still be taken by another program
# before the emulator binds it, so a start that fails on the port is retried.
_EMULATOR_STARTS = 3


def _start_emulator(port, log_path):
  """Starts the emulator on `port`; returns the process, or None if the port was taken.

  On a taken port the emulator does not exit: its server thread dies with
  EADDRINUSE and the main thread waits forever. The traceback in its log is
  the sign.
  """
  log_file = open(log_path, "w")  # a file, not a pipe nobody drains
  # Run as a module of this interpreter: the emulator installed with it (at the
  # version setup.py's test extra pins), whatever else PATH holds.
  proc = subprocess.Popen(
      [sys.executable, "-m", "gcp_storage_emulator", "start", "--host=127.0.0.1", f"--port={port}",
       "--in-memory", "--quiet"], stdout=log_file, stderr=subprocess.STDOUT)
  log_file.close()  # the child has its own descriptor
  url = f"http://127.0.0.1:{port}"
  deadline = time.time() + 30
  while True:
    if "Address already in use" in log_path.read_text():
      proc.kill()
      proc.wait()
      return None
    try:
      with urllib.request.urlopen(url + "/", timeout=1) as r:
        if r.status == 200 and r.read() == b"OK":  # the emulator's health check
          return proc
    except OSError:
      pass
    if proc.poll() is not None:
      pytest.fail(f"gcp-storage-emulator exited with {proc.returncode}: {log_path.read_text()}")
    if time.time() > deadline:
      proc.kill()
      proc.wait()
      pytest.fail(f"gcp-storage-emulator did not answer within 30 s: {log_path.read_text()}")
    time.sleep(0.1)


def emulator(tmp_path_factory):
  """A `gcp-storage-emulator` process on a free port; yields its URL."""
  if importlib.util.find_spec("gcp_storage_emulator") is None:
    pytest.fail("gcp-storage-emulator is not installed in this environment "
                f"({sys.executable}): pip install \".[test]\"")
  log_dir = tmp_path_factory.mktemp("emulator")
  tried = []
  for attempt in range(_EMULATOR_STARTS):
    tried.append(free_port())
    proc = _start_emulator(tried[-1], log_dir / f"emulator-{attempt}.log")
    if proc:
      break
  else:
    pytest.fail(f"gcp-storage-emulator found its port taken {_EMULATOR_STARTS} times: {tried}")
  yield f"http://127.0.0.1:{tried[-1]}"
  proc.terminate()
  proc.wait(timeout=10)


def bucket(emulator, monkeypatch):
  """A fresh bucket in the emulator, with STORAGE_EMULATOR_HOST pointing at it."""
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  name = f"bkt-{uuid.uuid4().hex[:8]}"
  from trainer import gcs  # pylint: disable=import-outside-toplevel
  gcs.client().create_bucket(name)
  return name



class FaultProxy:
  """An HTTP proxy on 127.0.0.1 that forwards to `upstream` and fails chosen requests.

  Args:
    upstream: the emulator's URL.
    match: match(method, path) -> bool picks the requests to fail; None
      forwards everything.
    nth: fail only the nth matching request (1-based); None fails them all.
      A failed request is answered with a 403 in GCS's JSON error format.

  `requests` records (method, path) of every request, in order.
  """

  def __init__(self, upstream, match=None, nth=None):
    self.upstream = upstream[len("http://"):]
    self.match = match
    self.nth = nth
    self.requests = []
    self._matched = 0
    self._lock = threading.Lock()
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive, like GCS

      def log_message(self, *args):
        pass

      def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy.requests.append((self.command, self.path))
        if proxy._should_fail(self.command, self.path):
          payload = json.dumps({"error": {"code": 403, "message": "injected: permission denied",
                                          "errors": [{"reason": "forbidden"}]}}).encode()
          self._reply(403, {"Content-Type": "application/json"}, payload)
          return
        conn = http.client.HTTPConnection(proxy.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        keep = {k: v for k, v in response.getheaders()
                if k.lower() not in ("connection", "transfer-encoding", "content-length")}
        conn.close()
        self._reply(response.status, keep, payload)

      def _reply(self, status, headers, payload):
        self.send_response(status)
        for k, v in headers.items():
          self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

      do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

  def _should_fail(self, method, path):
    if self.match is None or not self.match(method, path):
      return False
    with self._lock:
      self._matched += 1
      return self.nth is None or self._matched == self.nth

  def __enter__(self):
    threading.Thread(target=self._server.serve_forever, daemon=True).start()
    return self

  def __exit__(self, *exc):
    self._server.shutdown()
    self._server.server_close()
