"""The metrics TF Serving exports on its Prometheus page, counting real requests.

Sources: servables/tensorflow/util.cc (/tensorflow/serving/request_count by
model_name and status, RecordModelRequestCount; /tensorflow/serving/
request_latency by model_name, API and entrypoint, RecordRequestLatency, in
microseconds, successful requests only), model_servers/http_server.cc and
prediction_service_impl.cc (where REST and gRPC Predict record them),
tensorflow/tensorflow's cc/saved_model/loader.cc
(/tensorflow/cc/saved_model/load_attempt_count by model_path and status
"success" or "fail") and util/prometheus_exporter.cc (the page: metrics by
name, a "# TYPE" line each, histograms as cumulative _bucket lines then _sum
and _count). Only these three of TF Serving's many metrics are kept.
"""

from __future__ import annotations

import bisect
import threading

from standins.tfserving import rules

REQUEST_COUNT = "/tensorflow/serving/request_count"
REQUEST_LATENCY = "/tensorflow/serving/request_latency"
LOAD_ATTEMPT_COUNT = "/tensorflow/cc/saved_model/load_attempt_count"
_LABELS = {REQUEST_COUNT: ("model_name", "status"),
           REQUEST_LATENCY: ("model_name", "API", "entrypoint"),
           LOAD_ATTEMPT_COUNT: ("model_path", "status")}


def _label_value(value: str) -> str:
  # prometheus_exporter.cc, SanitizeLabelValue: \ and " escaped.
  return value.replace("\\", "\\\\").replace('"', '\\"')


def _number(value: float) -> str:
  # absl::StrCat of a double: six significant digits ("%g").
  return "%g" % value


class Metrics:
  """Counters and one histogram, by label values; `page()` is the Prometheus text."""

  def __init__(self):
    self._mu = threading.Lock()
    self._counters: dict[str, dict[tuple[str, ...], int]] = {REQUEST_COUNT: {},
                                                             LOAD_ATTEMPT_COUNT: {}}
    self._limits = rules.latency_buckets()
    # labels -> (bucket counts, the last one up to DBL_MAX; sum)
    self._latency: dict[tuple[str, ...], tuple[list[int], float]] = {}

  def count(self, metric: str, *labels: str) -> None:
    with self._mu:
      cells = self._counters[metric]
      cells[labels] = cells.get(labels, 0) + 1

  def request(self, model: str, api: str, entrypoint: str, code: rules.Code,
              latency_us: float) -> None:
    """One request: its count by status, and its latency if it succeeded."""
    self.count(REQUEST_COUNT, model, code.name)
    if code != rules.Code.OK:
      return
    with self._mu:
      buckets, total = self._latency.get((model, api, entrypoint),
                                         ([0] * (len(self._limits) + 1), 0.0))
      # Sampler buckets are upper bounds: a value equal to a limit goes above it.
      buckets[bisect.bisect_right(self._limits, latency_us)] += 1
      self._latency[(model, api, entrypoint)] = (buckets, total + latency_us)

  def value(self, metric: str, *labels: str) -> int:
    with self._mu:
      return self._counters[metric].get(labels, 0)

  def page(self) -> str:
    """PrometheusExporter::GeneratePage: metrics in name order, lines joined by newlines."""
    lines = []
    with self._mu:
      for metric in sorted([*self._counters, REQUEST_LATENCY]):
        name = rules.prometheus_name(metric)
        label_names = _LABELS[metric]
        if metric == REQUEST_LATENCY:
          lines.append(f"# TYPE {name} histogram")
          for labels, (buckets, total) in self._latency.items():
            text = ",".join(f'{n}="{_label_value(v)}"' for n, v in zip(label_names, labels))
            cumulative = 0
            for i, count in enumerate(buckets):
              cumulative += count
              limit = _number(self._limits[i]) if i < len(self._limits) else "+Inf"
              lines.append(f'{name}_bucket{{{text},le="{limit}"}} {cumulative}')
            lines.append(f"{name}_sum{{{text}}} {_number(total)}")
            lines.append(f"{name}_count{{{text}}} {cumulative}")
          continue
        lines.append(f"# TYPE {name} counter")
        for labels, count in self._counters[metric].items():
          text = ",".join(f'{n}="{_label_value(v)}"' for n, v in zip(label_names, labels))
          lines.append(f"{name}{{{text}}} {count}")
    return "\n".join(lines) + "\n"
