"""Server-side batching: --enable_batching with --batching_parameters_file.

Sources: model_servers/server.cc (BuildAndStart reads the BatchingParameters
text proto), servables/tensorflow/bundle_factory_util.h (CreateBatchScheduler:
ONE SharedBatchScheduler, num_batch_threads threads, for every model and
version the server loads; GetQueueOptions), batching/batching_session.cc (a
queue per signature; MergeInputTensors pads a batch to the next allowed size;
SplitOutputTensors) and tensorflow/tensorflow's
core/kernels/batching_util/shared_batch_scheduler.h (the queue: an open batch
that closes when full or after batch_timeout_micros; a thread takes the
oldest closed batch). The decisions are rules.check_batch_task and
rules.padded_batch_size.

The messages BatchingParameters and MonitoringConfig are not in the
tensorflow-serving-api package; they are transcribed here from
servables/tensorflow/session_bundle_config.proto (fields 1-9) and
config/monitoring_config.proto, with their names, numbers and types, so that
text_format refuses what ParseProtoTextFile refuses.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Callable, Optional

import numpy as np
from google.protobuf import descriptor_pb2
from google.protobuf import descriptor_pool
from google.protobuf import message_factory
from google.protobuf import text_format
from google.protobuf import wrappers_pb2

from standins.tfserving import rules
from standins.tfserving.rules import Code
from standins.tfserving.rules import ServingError


def _messages():
  F = descriptor_pb2.FieldDescriptorProto  # pylint: disable=invalid-name
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  proto = descriptor_pb2.FileDescriptorProto(
      name="standins/tfserving/batching.proto", package="tensorflow.serving", syntax="proto3",
      dependency=["google/protobuf/wrappers.proto"])

  def message(name, fields):
    m = proto.message_type.add(name=name)
    for field, number, kind, type_name, label in fields:
      m.field.add(name=field, number=number, type=kind, label=label,
                  **({"type_name": type_name} if type_name else {}))

  opt, rep = F.LABEL_OPTIONAL, F.LABEL_REPEATED
  i64, msg = ".google.protobuf.Int64Value", F.TYPE_MESSAGE
  message("BatchingParameters", [
      ("max_batch_size", 1, msg, i64, opt), ("batch_timeout_micros", 2, msg, i64, opt),
      ("max_enqueued_batches", 3, msg, i64, opt), ("num_batch_threads", 4, msg, i64, opt),
      ("thread_pool_name", 5, msg, ".google.protobuf.StringValue", opt),
      ("allowed_batch_sizes", 6, F.TYPE_INT64, None, rep),
      ("pad_variable_length_inputs", 7, F.TYPE_BOOL, None, opt),
      ("enable_large_batch_splitting", 8, msg, ".google.protobuf.BoolValue", opt),
      ("max_execution_batch_size", 9, msg, i64, opt)])
  message("PrometheusConfig", [("enable", 1, F.TYPE_BOOL, None, opt),
                               ("path", 2, F.TYPE_STRING, None, opt)])
  message("MonitoringConfig", [("prometheus_config", 1, msg, ".tensorflow.serving.PrometheusConfig",
                                opt)])
  pool.Add(proto)
  return tuple(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"tensorflow.serving.{n}"))
               for n in ("BatchingParameters", "MonitoringConfig"))


BatchingParametersProto, MonitoringConfigProto = _messages()


def parse_batching_parameters(text: str) -> rules.BatchingParameters:
  """A BatchingParameters text proto, with the scheduler's defaults for unset fields.

  Raises:
    text_format.ParseError: what ParseProtoTextFile refuses (start-up fails).
  """
  proto = text_format.Parse(text, BatchingParametersProto())
  defaults = rules.BatchingParameters()
  value = lambda name: getattr(proto, name).value if proto.HasField(name) else getattr(defaults, name)  # noqa: E731
  return rules.BatchingParameters(
      max_batch_size=value("max_batch_size"), batch_timeout_micros=value("batch_timeout_micros"),
      max_enqueued_batches=value("max_enqueued_batches"),
      num_batch_threads=value("num_batch_threads"),
      allowed_batch_sizes=tuple(proto.allowed_batch_sizes),
      enable_large_batch_splitting=value("enable_large_batch_splitting"),
      max_execution_batch_size=value("max_execution_batch_size"))


def parse_monitoring_config(text: str) -> Optional[str]:
  """The Prometheus page's path when the MonitoringConfig enables it, else None.

  Source: model_servers/http_server.cc, CreateAndStartHttpServer (an empty
  path is util/prometheus_exporter.cc's kPrometheusPath).
  """
  proto = text_format.Parse(text, MonitoringConfigProto())
  if not proto.prometheus_config.enable:
    return None
  return proto.prometheus_config.path or "/monitoring/prometheus/metrics"


@dataclasses.dataclass
class _Task:
  size: int
  inputs: dict[str, np.ndarray]
  done: threading.Event = dataclasses.field(default_factory=threading.Event)
  outputs: Optional[dict[str, np.ndarray]] = None
  error: Optional[ServingError] = None


class _Queue:
  """One signature's queue (batching_session.cc: one per signature of each version)."""

  def __init__(self, scheduler: "BatchScheduler", run: Callable[[dict], dict]):
    self.scheduler = scheduler
    self.run = run
    self.batches: collections.deque[list[_Task]] = collections.deque([[]])  # the last is open
    self.open_since = 0.0  # monotonic seconds of the open batch's first task

  def schedule(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """BatchingSession::InternalRun: ComputeInputSize, Schedule, wait for the batch."""
    sizes = {v.shape[0] if np.ndim(v) else 0 for v in inputs.values()}
    if len(sizes) != 1 or 0 in sizes and any(np.ndim(v) == 0 for v in inputs.values()):
      # batching/batching_util.cc, ComputeTensorBatchSize.
      raise ServingError(Code.INVALID_ARGUMENT,
                         "Batching Run() input tensors must have equal 0th-dimension size")
    task = _Task(sizes.pop(), inputs)
    with self.scheduler.cond:
      params = self.scheduler.params
      open_batch = self.batches[-1]
      if rules.check_batch_task(task.size, params, sum(t.size for t in open_batch),
                                len(self.batches)):
        self.batches.append([])
      if not self.batches[-1]:
        self.open_since = time.monotonic()
      self.batches[-1].append(task)
      self.scheduler.cond.notify_all()
    task.done.wait()
    if task.error:
      raise task.error
    return task.outputs

  def take(self, now: float) -> Optional[list[_Task]]:
    """Queue::ScheduleBatch: the oldest closed batch, or the open one once full or timed out."""
    params = self.scheduler.params
    if len(self.batches) == 1:
      open_batch = self.batches[0]
      full = sum(t.size for t in open_batch) >= params.max_batch_size
      if not open_batch or not (full or now - self.open_since >= params.batch_timeout_micros / 1e6):
        return None
      self.batches.append([])
    return self.batches.popleft()

  def deadline(self) -> Optional[float]:
    if len(self.batches) == 1 and self.batches[0]:
      return self.open_since + self.scheduler.params.batch_timeout_micros / 1e6
    return None

  def process(self, batch: list[_Task]) -> None:
    """BatchingSession::ProcessBatch: merge, pad, one run, split; an error fails every task."""
    try:
      size = sum(t.size for t in batch)
      padded = rules.padded_batch_size(size, self.scheduler.params.allowed_batch_sizes)
      merged = {}
      for name in batch[0].inputs:
        parts = [t.inputs[name] for t in batch]
        if padded > size:  # MergeInputTensors pads with copies of the first row
          parts.append(np.repeat(parts[0][:1], padded - size, axis=0))
        try:
          merged[name] = np.concatenate(parts)
        except ValueError as e:
          raise ServingError(Code.INVALID_ARGUMENT,
                             f"Tensors with name '{name}' from different tasks have different "
                             f"shapes and padding is turned off. Set pad_variable_length_inputs "
                             f"to true, or ensure that all tensors with the same name have equal "
                             f"dimensions starting with the first dim. ({e})") from e
      outputs = self.run(merged)
      start = 0
      for task in batch:
        task.outputs = {k: v[start:start + task.size] for k, v in outputs.items()}
        start += task.size
    except ServingError as e:
      for task in batch:
        task.error = e
    finally:
      for task in batch:
        task.done.set()


class BatchScheduler:
  """SharedBatchScheduler: num_batch_threads threads over every queue.

  `batches_processed` counts the batches run, and `batch_sizes` their sizes
  before padding, for tests.
  """

  def __init__(self, params: rules.BatchingParameters):
    rules.check_batching_parameters(params)
    self.params = params
    self.cond = threading.Condition()
    self.queues: list[_Queue] = []
    self.batch_sizes: list[int] = []
    self.processing = 0  # batches taken by a thread, not yet done
    self._stop = False
    self._threads = [threading.Thread(target=self._loop, daemon=True, name=f"batch-{i}")
                     for i in range(max(params.num_batch_threads, 1))]
    for thread in self._threads:
      thread.start()

  def queue(self, run: Callable[[dict], dict]) -> _Queue:
    with self.cond:
      queue = _Queue(self, run)
      self.queues.append(queue)
      return queue

  def remove(self, queue: _Queue) -> None:
    with self.cond:
      if queue in self.queues:
        self.queues.remove(queue)

  def _loop(self) -> None:
    while True:
      with self.cond:
        while True:
          if self._stop:
            return
          now = time.monotonic()
          # The first queue with a batch ready (the shared scheduler goes round-robin).
          queue, batch = next(((q, b) for q in self.queues for b in [q.take(now)] if b),
                              (None, None))
          if batch:
            self.processing += 1
            self.batch_sizes.append(sum(t.size for t in batch))
            break
          deadlines = [d for d in (q.deadline() for q in self.queues) if d is not None]
          self.cond.wait(max(min(deadlines) - now, 0) if deadlines else None)
      try:
        queue.process(batch)
      finally:
        with self.cond:
          self.processing -= 1
          self.cond.notify_all()

  def stop(self) -> None:
    with self.cond:
      self._stop = True
      self.cond.notify_all()
