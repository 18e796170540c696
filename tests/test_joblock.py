"""The job-directory lock (trainer/storage/joblock.py), on a local directory and on GCS.

GCS runs against a real `gcp-storage-emulator` process. The emulator ignores
request preconditions, on which the lock depends, so every GCS test goes
through `FaultProxy` (tests/standins/gcs_emulator.py): a real HTTP proxy in
front of it that enforces `ifGenerationMatch` the way GCS does.
"""

import json
import logging
import os
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from standins.gcs_emulator import FaultProxy, Rule
from trainer import errors
from trainer.storage import gcs
from trainer.storage import joblock
from trainer.storage import api as storage


@pytest.fixture(scope="module")
def preconditions(emulator):
  with FaultProxy(emulator) as proxy:
    yield proxy


@pytest.fixture(params=["local", "gcs"])
def job_dir(request, tmp_path, monkeypatch):
  """A job directory: a local folder, or a prefix in a fresh emulator bucket."""
  if request.param == "local":
    return str(tmp_path / "job")
  name = request.getfixturevalue("bucket")  # creates it, directly in the emulator
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", request.getfixturevalue("preconditions").url)
  return f"gs://{name}/runs/job"


def _lock(job_dir, uid="", name="", lease_s=60.0):
  return joblock.JobDirLock(job_dir, lease_s,
                            env={"TRAINER_JOB_UID": uid, "TRAINER_JOB_NAME": name})


def _plant(job_dir, **fields):
  """Writes a lock record as another holder would have left it."""
  record = {"job_uid": "", "job_name": "", "host": "other-host", "pid": 4242, "token": "planted",
            "acquired_at": time.time() - 100, "refreshed_at": time.time() - 10,
            "expires_at": time.time() + 600, "lease_s": 900.0, **fields}
  path = storage.join(job_dir, joblock.LOCK_NAME)
  if storage.is_gcs(path):
    bucket, name = storage.split_gcs(path)
    gcs.client().bucket(bucket).blob(name).upload_from_string(json.dumps(record))
  else:
    os.makedirs(job_dir, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
      json.dump(record, f)


def _dead_pid():
  proc = subprocess.Popen([sys.executable, "-c", "pass"])
  proc.wait()  # reaped, so its pid is free
  return proc.pid


def test_a_second_holder_is_refused_with_a_message_naming_the_holder(job_dir):
  with _lock(job_dir, uid="uid-a", name="train-a") as first:
    record = joblock.read_lock(job_dir)
    assert record["token"] == first.token
    assert {k: record[k] for k in ("job_uid", "job_name", "host", "pid", "lease_s")} == {
        "job_uid": "uid-a", "job_name": "train-a", "host": socket.gethostname(),
        "pid": os.getpid(), "lease_s": 60.0}
    assert record["acquired_at"] <= record["refreshed_at"] < record["expires_at"] == (
        record["refreshed_at"] + 60)
    with pytest.raises(errors.JobDirLocked) as e:
      _lock(job_dir, uid="uid-b", name="train-b").acquire()
  assert joblock.read_lock(job_dir) is None  # released on leaving the block
  message = str(e.value)
  assert e.value.exit_code == errors.EXIT_USAGE and "\n" not in message
  for part in ("train-a", "job uid uid-a", f"host {socket.gethostname()}", f"pid {os.getpid()}",
               "holding it since", "lease expires in 60 s", "--cascade=foreground",
               "new --job-dir", storage.join(job_dir, "lock.json")):
    assert part in message, part


def test_a_holder_on_another_host_is_refused(job_dir):
  _plant(job_dir, host="laptop-2", pid=_dead_pid())
  with pytest.raises(errors.JobDirLocked, match="on host laptop-2"):
    _lock(job_dir).acquire()


def test_an_expired_lease_is_taken_over(job_dir, caplog):
  old = _lock(job_dir, uid="uid-a", name="train-a", lease_s=0.3).acquire()
  time.sleep(0.4)
  with caplog.at_level(logging.WARNING, logger="trainer.storage.joblock"):
    new = _lock(job_dir, uid="uid-b").acquire()
  assert joblock.read_lock(job_dir)["token"] == new.token
  assert "lease expired" in caplog.text and "train-a (job uid uid-a)" in caplog.text
  assert old.held  # it learns at its next refresh (below)


def test_the_same_job_uid_takes_over_at_once(job_dir):
  _lock(job_dir, uid="uid-a", name="train-a").acquire()
  replacement = _lock(job_dir, uid="uid-a", name="train-a").acquire()
  assert joblock.read_lock(job_dir)["token"] == replacement.token


def test_a_dead_process_on_this_host_is_taken_over(job_dir):
  _plant(job_dir, host=socket.gethostname(), pid=_dead_pid())
  lock = _lock(job_dir).acquire()
  assert joblock.read_lock(job_dir)["token"] == lock.token


def test_a_live_process_on_this_host_is_refused(job_dir):
  with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]) as alive:
    _plant(job_dir, host=socket.gethostname(), pid=alive.pid)
    with pytest.raises(errors.JobDirLocked, match=f"pid {alive.pid}"):
      _lock(job_dir).acquire()
    alive.kill()


def test_pods_never_judge_by_pid(job_dir):
  # A rerun of a same-named Job gets the same hostnames, and pids are per pod.
  _plant(job_dir, host=socket.gethostname(), pid=_dead_pid(), job_uid="uid-old")
  with pytest.raises(errors.JobDirLocked, match="uid-old"):
    _lock(job_dir, uid="uid-new").acquire()


def test_refresh_extends_the_lease_and_maybe_refresh_is_cheap(job_dir):
  # A quarter of a 4 s lease is 1 s: the first check comes well within it even when a
  # loaded machine stalls the GCS read in between, which 0.1 s (a quarter of 0.4 s) did
  # not leave room for.
  lock = _lock(job_dir, lease_s=4.0).acquire()
  before = joblock.read_lock(job_dir)
  assert not lock.maybe_refresh()  # less than a quarter of the lease has passed
  assert joblock.read_lock(job_dir) == before  # so nothing was written
  time.sleep(1.05)
  assert lock.maybe_refresh()
  after = joblock.read_lock(job_dir)
  assert after["expires_at"] > before["expires_at"] + 1
  assert after["acquired_at"] == before["acquired_at"] and after["token"] == lock.token


def test_refresh_after_a_takeover_raises_and_release_leaves_the_new_holders_lock(job_dir):
  stalled = _lock(job_dir, name="train-a", lease_s=0.3).acquire()
  time.sleep(0.4)
  new = _lock(job_dir, uid="uid-b", name="train-b").acquire()
  with pytest.raises(errors.JobDirLocked, match="another training took over.*train-b"):
    stalled.refresh()
  stalled.release()
  assert joblock.read_lock(job_dir)["token"] == new.token
  new.release()
  assert joblock.read_lock(job_dir) is None


def test_refresh_after_the_lock_was_deleted_raises(job_dir):
  lock = _lock(job_dir).acquire()
  path = storage.join(job_dir, joblock.LOCK_NAME)
  if storage.is_gcs(path):
    gcs.client().bucket(storage.split_gcs(path)[0]).blob(storage.split_gcs(path)[1]).delete()
  else:
    os.remove(path)
  with pytest.raises(errors.JobDirLocked, match="was deleted while this training held it"):
    lock.refresh()


def test_release_after_a_takeover_without_refresh_leaves_the_new_holders_lock(job_dir):
  stalled = _lock(job_dir, lease_s=0.3).acquire()
  time.sleep(0.4)
  new = _lock(job_dir, uid="uid-b").acquire()
  stalled.release()
  assert joblock.read_lock(job_dir)["token"] == new.token


# A racer: a child process that tries each lock in argv[2:] when the parent says go.
_RACER = """
import os, sys, time
from trainer import errors
from trainer.storage import joblock
barrier, job_dirs = sys.argv[1], sys.argv[2:]
held = []
open(os.path.join(barrier, f"ready-{os.getpid()}"), "w").close()
for i, job_dir in enumerate(job_dirs):
  lock = joblock.JobDirLock(job_dir, env={})
  while not os.path.exists(os.path.join(barrier, f"go-{i}")):
    time.sleep(0.001)
  try:
    held.append(lock.acquire())
    print("WON", os.getpid(), flush=True)
  except errors.JobDirLocked:
    print("LOCKED", os.getpid(), flush=True)
sys.stdin.read()  # hold what we won until the parent has every answer
"""
_RACERS = 4


@pytest.fixture(scope="module")
def races(preconditions, tmp_path_factory):
  """Runs every race in one batch of racers: {(race, backend): (winner pids, final record)}.

  One batch, so that each racer starts (and loads the google libraries) once.
  Each race starts when every racer is ready for it, so they all hit the lock
  within a millisecond or so.
  """
  root = tmp_path_factory.mktemp("races")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv("STORAGE_EMULATOR_HOST", preconditions.url)
    gcs.client().create_bucket("races")
    keys = [(race, backend) for race in ("acquire", "takeover") for backend in ("local", "gcs")]
    dirs = [str(root / f"{r}-{b}") if b == "local" else f"gs://races/{r}" for r, b in keys]
    for (race, _), job_dir in zip(keys, dirs):
      if race == "takeover":
        _plant(job_dir, expires_at=time.time() - 1)  # a dead job's lock
    barrier = root / "barrier"
    barrier.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, str(barrier), *dirs], cwd=REPO,
                              env={**os.environ, "PYTHONPATH": REPO}, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(_RACERS)]
    results = {}
    try:
      deadline = time.time() + 60
      while len([f for f in os.listdir(barrier) if f.startswith("ready-")]) < _RACERS:
        assert time.time() < deadline and all(p.poll() is None for p in procs), "a racer died"
        time.sleep(0.01)
      for i, (key, job_dir) in enumerate(zip(keys, dirs)):
        (barrier / f"go-{i}").touch()
        answers = [p.stdout.readline().split() for p in procs]
        assert all(a and a[0] in ("WON", "LOCKED") for a in answers), answers
        results[key] = ([int(pid) for verdict, pid in answers if verdict == "WON"],
                        joblock.read_lock(job_dir))
    finally:
      for p in procs:
        p.stdin.close()
        p.wait(timeout=30)
  return results


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_of_racing_processes_exactly_one_acquires(races, backend):
  winners, record = races["acquire", backend]
  assert len(winners) == 1 and record["pid"] == winners[0]


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_of_racing_takeovers_of_an_expired_lock_exactly_one_wins(races, backend):
  winners, record = races["takeover", backend]
  assert len(winners) == 1 and record["pid"] == winners[0]


def test_gcs_answering_503_is_a_transient_error(emulator, bucket, monkeypatch):
  monkeypatch.setattr(joblock, "RETRY_DEADLINE_S", 1.0)  # seconds of retries; default 15
  with FaultProxy(emulator, rules=[Rule("status", status=503)]) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.TransientError, match=f"gs://{bucket}/runs/job/lock.json") as e:
      _lock(f"gs://{bucket}/runs/job").acquire()
  assert e.value.exit_code == errors.EXIT_TRANSIENT


def test_refresh_rides_out_a_gcs_outage_while_the_lease_holds(emulator, bucket, monkeypatch,
                                                              caplog):
  monkeypatch.setattr(joblock, "RETRY_DEADLINE_S", 0.5)
  outage = Rule("status", status=503)
  with FaultProxy(emulator) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    long, short = (_lock(f"gs://{bucket}/{name}", lease_s=s).acquire()
                   for name, s in (("long", 60.0), ("short", 0.6)))
    proxy.rules.append(outage)
    with caplog.at_level(logging.WARNING, logger="trainer.storage.joblock"):
      long.refresh()  # 60 s of lease left: worth retrying at the next step
    assert "will retry" in caplog.text and long.held
    time.sleep(0.5)
    with pytest.raises(errors.TransientError):
      short.refresh()  # 0.1 s of its lease left: the caller must stop


def test_gcs_forbidden_is_a_storage_error_naming_the_bucket(emulator, bucket, monkeypatch):
  with FaultProxy(emulator, match=lambda method, path: "/upload/" in path) as proxy:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
    with pytest.raises(errors.StorageError,
                       match=f"permission denied on bucket gs://{bucket} .*storage.objects.create"):
      _lock(f"gs://{bucket}/runs/job").acquire()


def test_a_missing_bucket_is_a_storage_error_naming_it(emulator, monkeypatch):
  monkeypatch.setenv("STORAGE_EMULATOR_HOST", emulator)
  with pytest.raises(errors.StorageError, match="bucket gs://no-such-bkt-7 does not exist"):
    _lock("gs://no-such-bkt-7/job").acquire()
