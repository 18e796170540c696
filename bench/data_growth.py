"""Data growth: start-up and per-worker reading, folder:PATH versus trainer.prepare, 10k to 100k images.

  python bench/data_growth.py            # 10,000, 30,000, 100,000 images: ~3 minutes on 2 cores
  python bench/data_growth.py --quick    # 10,000 and 30,000: ~1.5 minutes
  python bench/data_growth.py --sizes 10000,50000 --rounds 3

For each size N: a learnable folder of N training and N/5 test PNGs (32x32x3,
10 classes, trainer.synthetic) is written once into --work and reused; it is
prepared afresh (`python -m trainer.prepare`, timed: the one-off cost). Then,
alternating the two ways round by round (folder first in odd rounds), each
runs as a whole process, as worker 0 of 2:

* folder: `--dataset folder:PATH`. data.load lists the folder, reads every
  header and decodes worker 0's half of the files, once, into memory;
* prepared: `--dataset images_N --data-dir DIR` (the catalog path), worker 0
  reading its half of the TFRecord files (TFDS's by-file sharding).

Measured in each process (the `--child` entry point below):
(a) start-up: from process start (the parent's clock before spawning) to
    the first batch of `data.train_dataset` for worker 0 (which fills the
    shuffle buffer first, as training does);
(b) in a second process, worker 0's share, once: seconds from data.load's
    start until every image of its train share has been read once (the
    folder way decodes them in that first read), images counted, and bytes
    read meanwhile (/proc/self/io rchar: what read() calls returned, from
    the page cache or the disk);
and the larger peak RSS (VmHWM) of the two.

The files are on a local disk and in the page cache (just written): the
folder way's per-file costs (an open per file, for the headers of all files
and the decode of its share) grow on network storage such as gs://, where
each is a request; the prepared way reads few, large files.

Measured 2026-11-24, AMD EPYC, 2 cores (AVX-512) shared with other jobs,
TensorFlow 2.21, medians of 3 rounds, worker 0 of 2 (3 minutes; spreads
within 10%):

  train images  prepare | start-up folder prepared | share read once folder prepared
         10000     6.7 s |          2.4 s     2.5 s |                 0.49 s   0.57 s
         30000    11.6 s |          2.9 s     3.0 s |                 0.89 s   1.00 s
        100000    30.8 s |          4.4 s     3.3 s |                 2.51 s   2.77 s

On a local disk the two ways are level up to ~30,000 images. The folder
way's start-up grows ~22 us per training image (every header, then its
share decoded before the first batch): 1.34x the prepared way's at 100,000.
The prepared way's stays nearly flat: it fills the 16,384-image shuffle
buffer, then reads on while training. Reading the share once costs the same
(the folder way 0.9x), and so do bytes read and peak RSS (154 / 156 MB,
841 / 794 MB at 100,000). One preparation (31 s at 100,000) pays for itself
after ~29 process starts here; on storage where every file costs a request
(gs://: each worker reads every header and each file of its share), sooner.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402  (sets up sys.path and TF logging)

WAYS = ("folder", "prepared")


def _rchar() -> int:
  """Bytes this process has read so far (all threads), from /proc/self/io."""
  with open("/proc/self/io") as f:
    return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def child(mode: str, dataset: str, data_dir: str, started: float) -> None:
  """Worker 0 of 2, one measurement (`mode`); prints JSON.

  startup: from process start (`started`, the parent's clock) to the first
    training batch;
  share: data.load, then one pass over its train share (the folder way
    decodes it in that first read): seconds, images, bytes read.
  """
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from trainer import presets  # pylint: disable=import-outside-toplevel
  from trainer.data import pipeline as data  # pylint: disable=import-outside-toplevel

  config = presets.preset("cifar10", dataset=dataset, data_dir=data_dir or None)
  context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=0,
                                       num_replicas_in_sync=2)
  read0, start = _rchar(), time.perf_counter()
  source = data.load(config)
  result = {"load_s": time.perf_counter() - start}
  if mode == "startup":
    next(iter(data.train_dataset(source, config, context)))
    result["startup_s"] = time.time() - started
  else:
    images = 0
    for _, labels in source.read(True, context, config.seed).batch(1024):
      images += int(labels.shape[0])
    result.update(share_s=time.perf_counter() - start, images=images,
                  read_mb=(_rchar() - read0) / 2**20)
  # The peak since exec. (wait4's ru_maxrss would count the pages of the
  # parent, which holds TensorFlow, that the child had until its exec.)
  with open("/proc/self/status") as f:
    result["rss_mb"] = int(next(line for line in f if line.startswith("VmHWM:")).split()[1]) / 1024
  print(json.dumps(result))


def run_child(mode: str, dataset: str, data_dir: str = "") -> dict:
  started = time.time()
  proc = subprocess.run(
      [sys.executable, __file__, "--child", mode, dataset, "--data-dir", data_dir,
       "--started", repr(started)], cwd=common.REPO, capture_output=True, text=True)
  if proc.returncode:
    raise RuntimeError(f"child {mode} {dataset} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
  return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(dataset: str, data_dir: str = "") -> dict:
  """Both measurements of one way, each in a fresh process."""
  startup = run_child("startup", dataset, data_dir)
  result = run_child("share", dataset, data_dir)
  result.update(startup_s=startup["startup_s"], rss_mb=max(startup["rss_mb"], result["rss_mb"]))
  return result


def write_folder(work: str, size: int) -> str:
  """Writes (once) N train / N/5 test learnable PNGs; returns the folder."""
  from trainer.data import synthetic  # pylint: disable=import-outside-toplevel
  root = os.path.join(work, f"images_{size}")
  done = root + ".done"
  if not os.path.exists(done):
    shutil.rmtree(root, ignore_errors=True)
    start = time.perf_counter()
    synthetic.write_image_folder(root, (32, 32, 3), None, size, size // 5)
    open(done, "w").close()
    print(f"  wrote {root} in {time.perf_counter() - start:.0f} s")
  return root


def prepare(root: str, data_dir: str, name: str) -> float:
  """`python -m trainer.prepare` as a whole process, afresh; returns its wall time."""
  shutil.rmtree(os.path.join(data_dir, name), ignore_errors=True)
  start = time.perf_counter()
  subprocess.run([sys.executable, "-m", "trainer.prepare", f"folder:{root}", "--data-dir",
                  data_dir, "--name", name], cwd=common.REPO, check=True, capture_output=True)
  return time.perf_counter() - start


def _mb(path: str) -> float:
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
             for f in files) / 2**20


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--sizes", default="10000,30000,100000",
                      help="training images per folder, comma-separated (default: 10000,30000,100000).")
  parser.add_argument("--rounds", type=int, default=3, help="folder/prepared pairs per size (default: 3).")
  parser.add_argument("--quick", action="store_true", help="sizes 10000,30000 and 2 rounds.")
  parser.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cnn-trainer-bench",
                                                     "data_growth"),
                      help="where the folders are written once and reused.")
  parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
  parser.add_argument("--data-dir", default="", help=argparse.SUPPRESS)
  parser.add_argument("--started", type=float, help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    return child(*args.child, args.data_dir, args.started)
  if args.quick:
    args.sizes, args.rounds = "10000,30000", 2
  sizes = [int(s) for s in args.sizes.split(",")]
  data_dir = os.path.join(args.work, "tfds")
  os.makedirs(data_dir, exist_ok=True)

  print(f"machine: {common.machine()}")
  print(f"cpu: {common.cpu()}")
  print(f"data: learnable 32x32x3 PNGs, 10 classes, test split 1/5 of train; {args.rounds} rounds "
        "per size; each process is worker 0 of 2")
  summary = []
  for size in sizes:
    print(f"{size} training images:")
    root = write_folder(args.work, size)
    name = f"images_{size}"
    prepare_s = prepare(root, data_dir, name)
    print(f"  prepare (one-off): {prepare_s:.1f} s; folder {_mb(root):.0f} MB, prepared "
          f"{_mb(os.path.join(data_dir, name)):.0f} MB")
    args_of = {"folder": (f"folder:{root}",), "prepared": (name, data_dir)}
    runs = {way: [] for way in WAYS}
    for r in range(args.rounds):
      for way in (WAYS if r % 2 == 0 else WAYS[::-1]):
        runs[way].append(measure(*args_of[way]))
      print("  round " + str(r + 1) + ": " + "; ".join(
          f"{way} start-up {runs[way][-1]['startup_s']:.1f} s, share {runs[way][-1]['share_s']:.1f} s"
          for way in WAYS))
      sys.stdout.flush()
    row = {"size": size, "prepare_s": prepare_s}
    for way in WAYS:
      last = runs[way][-1]
      row[way] = {key: statistics.median(run[key] for run in runs[way])
                  for key in ("startup_s", "load_s", "share_s", "read_mb", "rss_mb")}
      row[way].update(images=last["images"])
      print(f"  {way:8s}: start-up {common.spread([run['startup_s'] for run in runs[way]])} s; "
            f"data.load {row[way]['load_s']:.2f} s; share of {last['images']} images read once in "
            f"{row[way]['share_s']:.2f} s, {row[way]['read_mb']:.0f} MB read; peak RSS "
            f"{row[way]['rss_mb']:.0f} MB")
    for key, what in (("startup_s", "start-up"), ("share_s", "share read once")):
      ratios = [f[key] / p[key] for f, p in zip(runs["folder"], runs["prepared"])]
      print(f"  {what} folder/prepared: {common.spread(ratios)}")
    summary.append(row)

  print("\nsummary (medians; worker 0 of 2; seconds):")
  print(f"{'train images':>12} {'prepare':>8} | {'start-up folder':>15} {'prepared':>8} {'ratio':>6} | "
        f"{'share folder':>12} {'prepared':>8} {'ratio':>6} | {'MB read folder':>14} {'prepared':>8} | "
        f"{'peak RSS MB folder':>18} {'prepared':>8}")
  for row in summary:
    f, p = row["folder"], row["prepared"]
    print(f"{row['size']:>12} {row['prepare_s']:>8.1f} | {f['startup_s']:>15.1f} {p['startup_s']:>8.1f} "
          f"{f['startup_s'] / p['startup_s']:>6.2f} | {f['share_s']:>12.2f} {p['share_s']:>8.2f} "
          f"{f['share_s'] / p['share_s']:>6.2f} | {f['read_mb']:>14.0f} {p['read_mb']:>8.0f} | "
          f"{f['rss_mb']:>18.0f} {p['rss_mb']:>8.0f}")
  if len(summary) > 1:
    first, last = summary[0], summary[-1]
    grow = last["size"] / first["size"]
    for way in WAYS:
      print(f"{way}: {grow:.0f}x the images -> start-up x{last[way]['startup_s'] / first[way]['startup_s']:.2f}, "
            f"share read once x{last[way]['share_s'] / first[way]['share_s']:.2f}")
    # Break-even: how many starts (first runs, restarts after preemption,
    # every worker of every job) the one-off preparation pays for.
    saved = last["folder"]["startup_s"] - last["prepared"]["startup_s"]
    if saved > 0:
      print(f"at {last['size']} images, prepare pays for itself after "
            f"{last['prepare_s'] / saved:.1f} process starts")


if __name__ == "__main__":
  main()
