"""The end-to-end benchmark runs from a checkout and reports what docs/performance.md quotes.

The figures themselves are measured by `python bench/end_to_end.py`, never
asserted here (timings in tests are noise); this only keeps the benchmark
working: both input paths written to disk, the tutorial and trainer.task run
as whole processes, and the CPU named with its vector extensions.
"""

import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_end_to_end_benchmark_runs_both_input_paths_as_whole_processes(tmp_path):
  out = subprocess.run(
      [sys.executable, os.path.join(REPO, "bench", "end_to_end.py"), "--examples", "400",
       "--test-examples", "100", "--data", "synthetic", "--epochs", "1",
       "--project-args=--epochs 1 --batch-size 32", "--work", str(tmp_path)],
      check=True, capture_output=True, text=True, timeout=600).stdout
  assert re.search(r"^cpu: .*; \d+ CPUs; vector extensions: .*\bsse4_2\b", out, re.M), out
  for path in ("tfds", "folder"):
    assert re.search(rf"^{path} round 1: tutorial \d+ s .* accuracy [\d.]+; project \d+ s, "
                     r"accuracy [\d.]+; time ratio project/tutorial [\d.]+", out, re.M), out
    assert re.search(rf"^{path}: whole-process time ratio project/tutorial median [\d.]+", out, re.M)
  # Both forms were written once, in the work folder, and are reused.
  assert len([n for n in os.listdir(tmp_path) if n.endswith(".done")]) == 1
