"""The model server's core: config, labels, version policies, loads and unloads.

It follows model_servers/server_core.cc (ServerCore: ReloadConfig,
UpdateModelVersionLabelMap, AddModelsViaModelConfigList,
WaitUntilModelsAvailable), the file-system source
(sources/storage_path/file_system_storage_path_source.cc) and the manager
(core/aspired_versions_manager.cc with core/availability_preserving_policy.cc,
core/loader_harness.cc for retries). The decisions themselves are the small
functions in rules.py.

Time: the file system is polled every --file_system_poll_wait_seconds by a
background thread, as TF Serving does: at once for the first config, and for
a later config only at the next poll (rules.reload_polls_now), so a version
newly listed in models.config loads then. Tests that must not wait call
`poll_filesystem()` themselves: that is the interval elapsing, not a change of
behaviour. Loads run one at a time, apart from the polls (as the manager's
load threads are), so a poll can un-aspire a version whose load is being
retried, which ends its retries (rules.keep_retrying_load).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from typing import Callable, Optional

from tensorflow_serving.config import model_server_config_pb2

from standins.tfserving import metrics as metrics_lib
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
  # The status the load or unload ended with (ServableState::health);
  # None is OK.
  health: Optional[ServingError] = None
  attempts: int = 0  # load attempts so far


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
    self._poll_mu = threading.Lock()  # one file-system poll at a time
    self._manage_mu = threading.Lock()  # one load or unload at a time
    # ServableStateMonitors waiting on state changes: model -> version -> state.
    self._monitors: list[dict[str, dict[int, State]]] = []
    self._stop = threading.Event()
    self._poller: Optional[threading.Thread] = None
    self.configured = threading.Event()  # a config is in force (maybe still loading)
    self.batching = None  # a batching.BatchScheduler once enable_batching is called
    self.metrics = metrics_lib.Metrics()

  def enable_batching(self, params: rules.BatchingParameters) -> None:
    """--enable_batching: every version loaded from now on batches through one scheduler."""
    from standins.tfserving import batching  # pylint: disable=import-outside-toplevel
    self.batching = batching.BatchScheduler(params)

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
      first = self._config is None
      if not first:  # ValidateNoModelsChangePlatforms, before the config is stored
        rules.check_platforms_unchanged(
            {m.name: rules.model_platform(m.name, m.model_platform, m.model_type)
             for m in self._config.model_config_list.config},
            {m.name: rules.model_platform(m.name, m.model_platform, m.model_type)
             for m in models if m.name in self._sources})
      # server_core.cc stores the new config before the label check, so an
      # unchanged file that was refused is refused again on every poll.
      self._config = config
      with self._state_mu:
        labels = rules.assign_labels(
            {m.name: dict(m.version_labels) for m in models}, self._labels,
            {name: self._available(name) for name in self._harnesses},
            self.flags.allow_version_labels_for_unavailable_models)
        self._labels = labels
      # AddModelsViaModelConfigList: CreateStoragePathRoutes, every model.
      for m in models:
        rules.check_platform_supported(m.name, rules.model_platform(m.name, m.model_platform,
                                                                    m.model_type))
      new_models = [m.name for m in models if m.name not in self._sources]
      removed = set(self._sources) - {m.name for m in models}
      # The first config waits on the core's own monitor (every event since
      # start-up); a reload on a fresh one, created before the source changes.
      monitor = self._monitor(fresh=not first)
      try:
        with self._poll_mu:
          self._sources = {m.name: _source(m) for m in models}
        self.configured.set()
        if rules.reload_polls_now(first, self.flags.file_system_poll_wait_seconds):
          self._start_polling()
          self.poll_filesystem()
        elif removed:  # UpdateConfig un-aspires the models dropped from the config
          for name in removed:
            self._aspire(name, {})
          self._manage()
        self._wait_until_available(new_models, monitor)
      finally:
        with self._state_mu:
          if monitor in self._monitors:
            self._monitors.remove(monitor)

  def _monitor(self, fresh: bool) -> dict[str, dict[int, State]]:
    with self._state_mu:
      monitor = ({} if fresh else
                 {m: {v: h.state for v, h in versions.items()} for m, versions in self._seen.items()})
      self._monitors.append(monitor)
      return monitor

  def _wait_until_available(self, models: list[str], monitor: dict[str, dict[int, State]]) -> None:
    """ServerCore::WaitUntilModelsAvailable: no timeout; see rules.models_settled."""
    if not models:
      return
    with self._state_mu:
      while True:
        settled = rules.models_settled({m: monitor.get(m, {}) for m in models})
        if settled is not None:
          failed = {m: v for m, (v, state) in settled.items() if state != State.AVAILABLE}
          if not failed:
            return
          details = ""
          for m, v in sorted(failed.items()):
            health = self._seen.get(m, {}).get(v)
            error = f" due to error: {health.health}" if health and health.health else ""
            details += f"{{name: {m} version: {v}{error}}}, "
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
      self._poll_locked()
    self._manage()

  def _poll_locked(self) -> None:
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
          self._publish(name, version, State.NEW)
      self._state_mu.notify_all()

  def _publish(self, name: str, version: int, state: State) -> None:
    """A state change on the event bus, seen by every monitor (caller holds _state_mu)."""
    for monitor in self._monitors:
      monitor.setdefault(name, {})[version] = state

  def _manage(self) -> None:
    """Applies the policy's actions until there are none (loads one at a time)."""
    with self._manage_mu:
      self._manage_locked()

  def _manage_locked(self) -> None:
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

  def _set(self, name: str, version: int, state: State,
           health: Optional[ServingError] = None) -> None:
    with self._state_mu:
      harness = self._harnesses[name][version]
      harness.state, harness.health = state, health
      harness.error = str(health) if health else ""
      self._publish(name, version, state)
      self._state_mu.notify_all()

  def _load(self, name: str, version: int) -> None:
    """Loads with retries: 1 + --max_num_load_retries attempts, the interval apart.

    Source: core/loader_harness.cc, LoaderHarness::Load with util/retrier.cc;
    retries stop once the version is no longer aspired (rules.keep_retrying_load).
    """
    with self._state_mu:
      harness = self._harnesses.get(name, {}).get(version)
      if harness is None or harness.state != State.NEW or not harness.aspired:
        return  # a poll un-aspired it between the decision and now
    self._set(name, version, State.LOADING)
    description = f"Loading servable: {{name: {name} version: {version}}}"
    while True:
      if harness.attempts:
        self._stop.wait(self.flags.load_retry_interval_micros / 1e6)
        log.info("Retrying of %s retry: %d", description, harness.attempts)
      harness.attempts += 1
      try:
        servable = Servable(name, version, harness.path, self.flags.enable_model_warmup,
                            self.flags.num_request_iterations_for_warmup, batching=self.batching,
                            metrics=self.metrics)
      except ServingError as e:
        log.error("%s failed: %s", description, e)
        with self._state_mu:
          retry = rules.keep_retrying_load(harness.attempts, self.flags.max_num_load_retries,
                                           harness.aspired)
        if retry and not self._stop.is_set():
          continue
        if not harness.aspired:
          log.info("Retrying of %s was cancelled.", description)
        self._set(name, version, State.END, e)
        return
      with self._state_mu:
        cancelled = not harness.aspired
      if cancelled:  # LoaderHarness::Load: loaded, but cancelled meanwhile
        servable.close()
        self._set(name, version, State.END,
                  ServingError(Code.CANCELLED, "Loading of servable cancelled"))
        return
      with self._state_mu:
        self._servables[(name, version)] = servable
      log.info("Successfully loaded servable version {name: %s version: %d}", name, version)
      self._set(name, version, State.AVAILABLE)
      return

  def _unload(self, name: str, version: int) -> None:
    self._set(name, version, State.UNLOADING)
    with self._state_mu:
      servable = self._servables.pop((name, version), None)
      harness = self._harnesses[name].pop(version)
      harness.state, harness.health, harness.error = State.END, None, ""
      self._publish(name, version, State.END)
      self._state_mu.notify_all()
    if servable:
      servable.close()
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

  def version_statuses(self, name: str, version: Optional[int] = None
                       ) -> list[tuple[int, State, Code, str]]:
    """(version, state, error code, error message) per version, as GetModelStatus reports them.

    The code and message are rules.version_status of the version's health.
    """
    self.status(name, version)  # NOT_FOUND as status() raises it
    with self._state_mu:
      seen = dict(self._seen.get(name, {}))
    if version is not None:
      seen = {version: seen[version]}
    return [(v, h.state, *rules.version_status(h.state, h.health))
            for v, h in sorted(seen.items(), reverse=True)]

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
    if self.batching:
      self.batching.stop()
