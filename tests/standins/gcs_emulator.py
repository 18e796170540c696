"""A real `gcp-storage-emulator` process, and a proxy that injects GCS faults in front of it.

google-cloud-storage honours STORAGE_EMULATOR_HOST, so the trainer's GCS code
(trainer/storage/gcs.py) runs unchanged against the emulator over real sockets.
Failures the emulator cannot produce by itself (a 403 or 503, a response lost
after the request took effect, a refused connection, a request that hangs
until its client is killed, GCS's 412 on a create-only copy) come from
`FaultProxy`, a real HTTP proxy that forwards requests and applies `Rule`s to
the ones they select.

conftest.py exposes `emulator` and `bucket` as fixtures.
"""

from __future__ import annotations

import dataclasses
import http.client
import http.server
import importlib.util
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from typing import Callable, Optional

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
  from trainer.storage import gcs  # pylint: disable=import-outside-toplevel
  gcs.client().create_bucket(name)
  return name


# GCS's JSON error bodies (https://cloud.google.com/storage/docs/json_api/v1/status-codes):
# the reason each status carries, which google-api-core maps to its exception.
_REASONS = {403: "forbidden", 404: "notFound", 412: "conditionNotMet", 429: "rateLimitExceeded",
            500: "backendError", 503: "backendError"}


def gcs_error_body(status: int, message: str = "injected fault") -> bytes:
  return json.dumps({"error": {"code": status, "message": f"injected: {message}",
                               "errors": [{"reason": _REASONS.get(status, "unknown"),
                                           "message": f"injected: {message}"}]}}).encode()


@dataclasses.dataclass
class Rule:
  """One fault, and the requests it acts on.

  Attributes:
    kind: what happens to a selected request:
      "status": answered with `status` and GCS's JSON error body, not forwarded;
      "lost": forwarded, so the emulator acts on it, then the connection is
        closed without a reply: the client retries a request that already
        took effect;
      "refuse": the connection is closed without forwarding anything;
      "hold": blocked until `FaultProxy.release()` (then forwarded) or until
        the proxy closes (then dropped unforwarded), e.g. to kill the client
        while its request hangs.
    match: match(method, path) -> bool; None matches every request.
    status: the HTTP status for kind "status".
    nth: act on the nth matching request only (1-based).
    count: act on the first `count` matching requests. With neither nth nor
      count, act on every matching request.
  """

  kind: str
  match: Optional[Callable[[str, str], bool]] = None
  status: int = 403
  nth: Optional[int] = None
  count: Optional[int] = None
  matched: int = dataclasses.field(default=0, init=False)
  fired: int = dataclasses.field(default=0, init=False)

  def __post_init__(self):
    assert self.kind in ("status", "lost", "refuse", "hold"), self.kind

  def selects(self, method: str, path: str) -> bool:
    """Counts a request that matches; True if this rule acts on it (call under a lock)."""
    if self.match is not None and not self.match(method, path):
      return False
    self.matched += 1
    acts = ((self.nth is None or self.matched == self.nth) and
            (self.count is None or self.matched <= self.count))
    self.fired += acts
    return acts


def rewrite_to(name_suffix: str) -> Callable[[str, str], bool]:
  """Matches a server-side copy (objects.rewrite) whose destination ends with `name_suffix`."""
  quoted = urllib.parse.quote(name_suffix, safe="")
  return lambda method, path: ("/rewriteTo/" in path and
                               path.split("/rewriteTo/")[1].split("?")[0].endswith(quoted))


def _target_object(path: str, body: bytes) -> tuple[str, str]:
  """(bucket, object name) a JSON-API request's ifGenerationMatch is about.

  A copy's condition is on its destination; an upload names its object in
  the query or in its metadata part.
  """
  url = urllib.parse.urlsplit(path)
  target = url.path.split("/rewriteTo/", 1)[-1]
  match = re.search(r"/?b/([^/]+)/o/(.+)$", target)
  if match:
    return match.group(1), urllib.parse.unquote(match.group(2))
  bucket = re.search(r"/b/([^/]+)/o$", url.path).group(1)
  query = urllib.parse.parse_qs(url.query)
  if "name" in query:
    return bucket, query["name"][0]
  return bucket, json.loads(re.search(rb'"name":\s*("(?:[^"\\]|\\.)*")', body).group(1))


class FaultProxy:
  """An HTTP proxy that forwards to `upstream` and injects chosen faults.

  Args:
    upstream: the emulator's URL.
    host: the address to listen on: 127.0.0.1, or the host's address on a
      tests/k8s_harness.PodNetwork bridge so that pods can reach it.
    match, nth: shorthand for one rule, Rule("status", match, 403, nth): a 403
      in GCS's JSON error format for the nth matching request (all if None).
    rules: more `Rule`s, tried in order; the first that selects a request
      acts on it, and later rules neither see nor count that request.
    enforce_preconditions: enforce `ifGenerationMatch` as GCS does
      (https://cloud.google.com/storage/docs/request-preconditions): a
      request whose value differs from the object's current generation (0:
      the object does not exist) is answered 412 and changes nothing. The
      emulator ignores the condition and overwrites. Uploads, copies (the
      condition is on the destination), downloads and deletes are checked,
      and forwarded under one lock, so they are atomic with respect to each
      other, for requests through this proxy.

  The Host header is not forwarded, so the download links (mediaLink) the
  emulator builds point at the emulator itself: objects listed through the
  proxy stay readable after it closes, and downloads bypass it.

  `requests` records (method, path) of every request, in order; `held` is set
  once a "hold" rule holds a request.
  """

  def __init__(self, upstream, match=None, nth=None, rules=(), enforce_preconditions=True,
               host="127.0.0.1"):
    self.upstream = upstream[len("http://"):]
    self.rules = ([Rule("status", match, 403, nth)] if match is not None else []) + list(rules)
    self.enforce_preconditions = enforce_preconditions
    self.requests = []
    self.held = threading.Event()
    self._released = threading.Event()
    self._closing = False
    self._lock = threading.Lock()
    self._precondition_lock = threading.Lock()
    proxy = self

    class Handler(http.server.BaseHTTPRequestHandler):
      protocol_version = "HTTP/1.1"  # keep-alive, like GCS

      def log_message(self, *args):
        pass

      def _handle(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        rule = proxy._select(self.command, self.path)
        kind = rule.kind if rule else None
        if kind == "status":
          self._reply(rule.status, {"Content-Type": "application/json"},
                      gcs_error_body(rule.status))
          return
        if kind == "refuse" or (kind == "hold" and not proxy._hold()):
          self.close_connection = True  # closed with no reply at all
          return
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("connection", "host")}
        status, reply_headers, payload = proxy._forward(self.command, self.path, body, headers)
        if kind == "lost":
          self.close_connection = True  # the upstream acted; its answer is dropped
          return
        self._reply(status, reply_headers, payload)

      def _reply(self, status, headers, payload):
        self.send_response(status)
        for k, v in headers.items():
          self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

      do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _handle

    self._server = http.server.ThreadingHTTPServer((host, 0), Handler)
    self.url = f"http://{host}:{self._server.server_address[1]}"

  def _select(self, method, path):
    with self._lock:
      self.requests.append((method, path))
      for rule in self.rules:
        if rule.selects(method, path):
          return rule
    return None

  def _hold(self) -> bool:
    """Blocks a request; True to forward it once released, False if the proxy is closing."""
    self.held.set()
    self._released.wait()
    return not self._closing

  def release(self):
    """Lets held requests (and later ones a hold rule selects) through."""
    self._released.set()

  def _upstream(self, method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(self.upstream, timeout=30)
    try:
      conn.request(method, path, body=body, headers=headers or {})
      response = conn.getresponse()
      payload = response.read()
      keep = {k: v for k, v in response.getheaders()
              if k.lower() not in ("connection", "transfer-encoding", "content-length")}
      return response.status, keep, payload
    finally:
      conn.close()

  def _forward(self, method, path, body, headers):
    expected = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("ifGenerationMatch")
    if not self.enforce_preconditions or not expected:
      return self._upstream(method, path, body, headers)
    with self._precondition_lock:
      if self._generation(*_target_object(path, body)) != int(expected[0]):
        return 412, {"Content-Type": "application/json"}, gcs_error_body(
            412, "At least one of the pre-conditions you specified did not hold.")
      return self._upstream(method, path, body, headers)

  def _generation(self, bucket: str, name: str) -> int:
    """The object's generation in the emulator, 0 if it does not exist."""
    status, _, payload = self._upstream(
        "GET", f"/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}")
    return int(json.loads(payload)["generation"]) if status == 200 else 0

  def __enter__(self):
    threading.Thread(target=self._server.serve_forever, daemon=True).start()
    return self

  def __exit__(self, *exc):
    self._closing = True
    self._released.set()  # held requests are dropped, not forwarded
    self._server.shutdown()
    self._server.server_close()
