"""The model server's core: config, labels, version policies, loads and unloads.

It follows model_servers/server_core.cc (ServerCore: ReloadConfig,
UpdateModelVersionLabelMap, AddModelsViaModelConfigList,
WaitUntilModelsAvailable), the file-system source
(sources/storage_path/file_system_storage_path_source.cc) and the manager
(core/aspired_versions_manager.cc with core/availability_preserving_policy.cc,
core/loader_harness.cc for retries). The decisions themselves are the small
functions in rules.py.

Time: the file system is polled every --file_system_poll_wait_seconds by a
background thread, as TF Serving does. Tests that must not wait call
`poll_filesystem()` themselves: that is the interval elapsing, not a change of
behaviour.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable, Optional

from tensorflow_serving.config import model_server_config_pb2

from standins.tfserving import rules
from standins.tfserving.flags import Flags
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError
from standins.tfserving.rules import State
from standins.tfserving.servables import Servable

log = logging.getLogger("tensorflow_model_server")


@dataclasses.dataclass
class _Source:
  """One model as the file-system source watches it."""
  base_path: str
  policy: str  # latest, all, specific
  num_versions: int
  specific: tuple[int, ...]


@dataclasses.dataclass
class _Harness:
  """One version as the manager tracks it (core/loader_harness.h)."""
  state: State
  aspired: bool
  path: str
  error: str = ""


def _source(config: model_server_config_pb2.ModelConfig) -> _Source:
  policy = config.model_version_policy.WhichOneof("policy_choice") or "latest"
  return _Source(config.base_path, policy, config.model_version_policy.latest.num_versions,
                 tuple(config.model_version_policy.specific.versions))


class ServerCore:
  """ServerCore for a ModelConfigList (the only config kind the stand-in takes).

  Args:
    flags: the server's flags (retries, warm-up, label option, poll interval).
    local_path: maps a config's base path to a local folder (the tests map
      gs://BUCKET/... to a temporary directory); the identity by default.
  """

  def __init__(self, flags: Flags, local_path: Callable[[str], str] = lambda p: p):
    self.flags = flags
    self.local_path = local_path
    self._config: Optional[model_server_config_pb2.ModelServerConfig] = None
    self._sources: dict[str, _Source] = {}
    self._harnesses: dict[str, dict[int, _Harness]] = {}
    # What GetModelStatus reports: the last state of every version seen,
    # including unloaded and failed ones (core/servable_state_monitor.cc).
    self._seen: dict[str, dict[int, _Harness]] = {}
    self._servables: dict[tuple[str, int], Servable] = {}
    self._labels: dict[str, dict[str, int]] = {}
    self._state_mu = threading.Condition()  # guards the maps above; notified on change
    self._config_mu = threading.Lock()  # ReloadConfig runs one at a time
    self._poll_mu = threading.Lock()  # one file-system poll and its loads at a time
    self._stop = threading.Event()
    self._poller: Optional[threading.Thread] = None
    self.configured = threading.Event()  # a config is in force (maybe still loading)

  # ------------------------------------------------------------ config

  def reload_config(self, config: model_server_config_pb2.ModelServerConfig) -> None:
    """ServerCore::ReloadConfig: validate, labels first, then models; may block.

    Raises:
      ServingError: the config is refused (nothing that serves changes), or a
        model it adds did not become available.
    """
    with self._config_mu:
      models = list(config.model_config_list.config)
      rules.validate_model_config_list((m.name, m.base_path) for m in models)
      for m in models:
        if m.model_platform not in ("", "tensorflow"):
          raise ServingError(Code.FAILED_PRECONDITION,
                             f"Model {m.name} requested unsupported platform {m.model_platform}")
      # server_core.cc stores the new config before the label check, so an
      # unchanged file that was refused is refused again on every poll.
      self._config = config
      with self._state_mu:
        labels = rules.assign_labels(
            {m.name: dict(m.version_labels) for m in models}, self._labels,
            {name: self._available(name) for name in self._harnesses},
            self.flags.allow_version_labels_for_unavailable_models)
        self._labels = labels
      new_models = [m.name for m in models if m.name not in self._sources]
      self._sources = {m.name: _source(m) for m in models}
      self.configured.set()
      self._start_polling()
      self.poll_filesystem()
      self._wait_until_available(new_models)

  def _wait_until_available(self, models: list[str]) -> None:
    """ServerCore::WaitUntilModelsAvailable: no timeout; a failed first version fails it."""
    with self._state_mu:
      while True:
        pending = [m for m in models if not self._available(m)]
        if not pending:
          return
        # A model is settled when it has a version AVAILABLE, or nothing left
        # to try and a version that failed; one with no version yet waits.
        failed = {m: [(v, h.error) for v, h in self._seen.get(m, {}).items() if h.error]
                  for m in pending if not self._loading(m)}
        failed = {m: errors for m, errors in failed.items() if errors}
        if len(failed) == len(pending):
          details = "".join(f"{{name: {m} version: {v} due to error: {e}}}, "
                            for m, errors in failed.items() for v, e in errors)
          raise ServingError(Code.UNKNOWN, f"{len(failed)} model(s) did not become available: "
                                           f"{{{details}}}")
        self._state_mu.wait(timeout=1.0)
        if self._stop.is_set():
          raise ServingError(Code.CANCELLED, "server stopped")

  # ---------------------------------------------------------- versions

  def _start_polling(self) -> None:
    if self._poller is None and self.flags.file_system_poll_wait_seconds > 0:
      def loop():
        while not self._stop.wait(self.flags.file_system_poll_wait_seconds):
          self.poll_filesystem()
      self._poller = threading.Thread(target=loop, daemon=True, name="fs-poll")
      self._poller.start()

  def poll_filesystem(self) -> None:
    """One poll of every base path, then the manager's loads and unloads.

    Source: file_system_storage_path_source.cc, PollFileSystemAndInvokeCallback:
    if any model's base path is missing, the whole poll fails and no model's
    versions change.
    """
    with self._poll_mu:
      found: dict[str, dict[int, str]] = {}
      for name, source in list(self._sources.items()):
        base = self.local_path(source.base_path)
        if not os.path.isdir(base):
          log.error("FileSystemStoragePathSource encountered a filesystem access error: Could "
                    "not find base path %s for servable %s", source.base_path, name)
          return
        found[name] = rules.version_directories(os.listdir(base))
        wanted = rules.wanted_versions(source.policy, found[name], source.num_versions,
                                       source.specific)
        if not wanted:
          log.warning("No versions of servable %s found under base path %s. Did you forget to "
                      "name your leaf directory as a number (eg. '/1/')?", name, source.base_path)
        self._aspire(name, {v: os.path.join(base, found[name][v]) for v in wanted})
      for name in set(self._harnesses) - set(self._sources):  # removed from the config
        self._aspire(name, {})
      self._manage()

  def _aspire(self, name: str, wanted: dict[int, str]) -> None:
    with self._state_mu:
      harnesses = self._harnesses.setdefault(name, {})
      for version, harness in list(harnesses.items()):
        harness.aspired = version in wanted
        if not harness.aspired and harness.state in (State.NEW, State.END):
          del harnesses[version]  # an errored version leaves; it is tried again if it returns
      for version, path in wanted.items():
        if version not in harnesses:
          harnesses[version] = _Harness(State.NEW, True, path)
          self._seen.setdefault(name, {})[version] = harnesses[version]

  def _manage(self) -> None:
    """Applies the policy's actions until there are none (loads one at a time)."""
    while True:
      with self._state_mu:
        actions = [(name, rules.next_action(
            rules.Snapshot(v, h.aspired, h.state) for v, h in harnesses.items()))
                   for name, harnesses in self._harnesses.items()]
      actions = [(name, a) for name, a in actions if a]
      if not actions:
        return
      for name, (action, version) in actions:
        (self._load if action == "load" else self._unload)(name, version)

  def _set(self, name: str, version: int, state: State, error: str = "") -> None:
    with self._state_mu:
      harness = self._harnesses[name][version]
      harness.state, harness.error = state, error
      self._state_mu.notify_all()

  def _load(self, name: str, version: int) -> None:
    """Loads with retries: 1 + --max_num_load_retries attempts, the interval apart.

    Source: core/loader_harness.cc, LoaderHarness::Load with util/retrier.cc.
    """
    self._set(name, version, State.LOADING)
    path = self._harnesses[name][version].path
    attempts = 1 + max(self.flags.max_num_load_retries, 0)
    for attempt in range(attempts):
      try:
        servable = Servable(name, version, path, self.flags.enable_model_warmup,
                            self.flags.num_request_iterations_for_warmup)
      except ServingError as e:
        log.error("Loading servable: {name: %s version: %d} failed: %s", name, version, e)
        if attempt + 1 < attempts and not self._stop.wait(self.flags.load_retry_interval_micros / 1e6):
          continue
        self._set(name, version, State.END, str(e))
        return
      with self._state_mu:
        self._servables[(name, version)] = servable
      log.info("Successfully loaded servable version {name: %s version: %d}", name, version)
      self._set(name, version, State.AVAILABLE)
      return

  def _unload(self, name: str, version: int) -> None:
    self._set(name, version, State.UNLOADING)
    with self._state_mu:
      self._servables.pop((name, version), None)
      harness = self._harnesses[name].pop(version)
      harness.state = State.END
      self._state_mu.notify_all()
    log.info("Done unloading servable version {name: %s version: %d}", name, version)

  def _available(self, name: str) -> list[int]:
    return sorted(v for v, h in self._harnesses.get(name, {}).items() if h.state == State.AVAILABLE)

  def _loading(self, name: str) -> bool:
    return any(h.state in (State.NEW, State.LOADING) for h in self._harnesses.get(name, {}).values())

  # ---------------------------------------------------------- requests

  def servable(self, name: str, version: Optional[int] = None,
               label: Optional[str] = None) -> Servable:
    """ServerCore::GetServableHandle for a request's model spec."""
    if not name:
      raise ServingError(Code.INVALID_ARGUMENT, "ModelSpec has no name specified.")
    with self._state_mu:
      chosen = rules.resolve(name, version, label, self._labels, self._available(name))
      return self._servables[(name, chosen)]

  def status(self, name: str, version: Optional[int] = None) -> list[tuple[int, State, str]]:
    """(version, state, error) as GetModelStatus reports them, newest first.

    Source: model_servers/get_model_status_impl.cc: NOT_FOUND while nothing
    is known of the model; otherwise every version seen, unloaded and failed
    ones as END. A label in the request is ignored there.
    """
    with self._state_mu:
      seen = dict(self._seen.get(name, {}))
    if version is not None:
      if version not in seen:
        raise ServingError(Code.NOT_FOUND, f"Could not find version {version} of model {name}")
      seen = {version: seen[version]}
    if not seen:
      raise ServingError(Code.NOT_FOUND, f"Could not find any versions of model {name}")
    return [(v, h.state, h.error) for v, h in sorted(seen.items(), reverse=True)]

  def config(self) -> Optional[model_server_config_pb2.ModelServerConfig]:
    """A copy of the config last stored by reload_config (None before the first)."""
    with self._config_mu:
      if self._config is None:
        return None
      copy = model_server_config_pb2.ModelServerConfig()
      copy.CopyFrom(self._config)
      return copy

  def labels(self) -> dict[str, dict[str, int]]:
    with self._state_mu:
      return {m: dict(v) for m, v in self._labels.items()}

  def stop(self) -> None:
    self._stop.set()
    with self._state_mu:
      self._state_mu.notify_all()
