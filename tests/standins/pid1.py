"""Runs a command as PID 1 of a new PID namespace, as a container runtime runs a container's process.

    python tests/standins/pid1.py COMMAND [ARG...]

This process stays in the caller's namespace and plays the runtime's part
(runc / containerd-shim): it forwards SIGTERM and SIGINT to the command,
which is PID 1 of its namespace, and ends as the command ends (its exit
code, or killed by the same signal), so that `subprocess.Popen.returncode`
is the command's. SIGKILL to this process (or its process group) kills the
command too (PR_SET_PDEATHSIG). Linux only; needs CAP_SYS_ADMIN (root).

Why: the kernel delivers to a PID namespace's init only the signals it has
a handler for (pid_namespaces(7), "The namespace init process"), SIGKILL
and SIGSTOP from an ancestor namespace excepted. A container's main
process with no SIGTERM handler therefore ignores SIGTERM and runs until
the kubelet's SIGKILL at the end of the grace period (exit 137), where an
ordinary child process would die of the SIGTERM at once (143).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

CLONE_NEWPID = 0x20000000  # <linux/sched.h>
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def argv(command: list[str]) -> list[str]:
  """The command line that runs `command` as PID 1 of a new PID namespace."""
  return [sys.executable, os.path.abspath(__file__), *command]


def available() -> bool:
  """Whether this machine lets us create PID namespaces (Linux, root): tried, not guessed."""
  import subprocess  # pylint: disable=import-outside-toplevel
  if not sys.platform.startswith("linux"):
    return False
  probe = "import os, sys; sys.exit(0 if os.getpid() == 1 else 3)"
  try:
    return subprocess.run(argv([sys.executable, "-c", probe]), capture_output=True,
                          timeout=60).returncode == 0
  except (OSError, subprocess.SubprocessError):
    return False


def main(command: list[str]) -> None:
  libc = ctypes.CDLL(None, use_errno=True)
  child = None
  pending: list[int] = []

  def forward(sig, _frame):
    if child is None:
      pending.append(sig)
    else:
      try:
        os.kill(child, sig)
      except ProcessLookupError:
        pass

  for sig in _FORWARDED:
    signal.signal(sig, forward)
  if libc.unshare(CLONE_NEWPID) != 0:
    err = ctypes.get_errno()
    sys.exit(f"pid1: unshare(CLONE_NEWPID): {os.strerror(err)}")
  pid = os.fork()  # the first child in the new namespace is its PID 1
  if pid == 0:
    for sig in _FORWARDED:
      signal.signal(sig, signal.SIG_DFL)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    try:
      os.execvp(command[0], command)
    finally:
      os._exit(127)  # pylint: disable=protected-access
  child = pid
  for sig in pending:
    os.kill(child, sig)
  while True:
    try:
      _, status = os.waitpid(child, 0)
      break
    except InterruptedError:
      continue
  if os.WIFSIGNALED(status):
    sig = os.WTERMSIG(status)
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)
  sys.exit(os.waitstatus_to_exitcode(status) if not os.WIFSIGNALED(status) else 1)


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  main(sys.argv[1:])
