"""Several processes of `bcos_jax.main` on this machine: a multi-host run without the hosts.

    python launch/local.py --processes=2 --devices_per_process=4 -- \\
        --config=configs/digits.py --workdir=/tmp/bcos_digits_2x4

Each process gets M CPU devices, one coordinator on a free localhost port
(`jax.distributed`), and CPU collectives (gloo), exactly as the hosts of a TPU
slice or a Slurm allocation would run (launch/tpu_vm.sh, launch/slurm.sbatch);
everything after `--` goes to every `python -m bcos_jax.main` unchanged. The
output of each process comes prefixed with its index, `[0] ...`.

A run of N×M devices trains to the same result as one process with N·M
devices: each process reads its rows of the same global batches. Exit status:
0 when every process finished; 75 when SIGTERM (sent to this launcher, which
passes it on) stopped the run with its checkpoint saved; otherwise the status of
the first process that failed, after the others were stopped. Running the same
command again resumes from the newest checkpoint.
"""

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

_PROCESSES = flags.DEFINE_integer("processes", 2, "Processes to start (the hosts of a run).",
                                  lower_bound=1)
_DEVICES = flags.DEFINE_integer("devices_per_process", 4, "CPU devices of each process.",
                                lower_bound=1)
_GRACE = flags.DEFINE_float("grace_s", 30.0, "After a process fails, how long the others get "
                            "to stop on SIGTERM before they are killed.")

STOPPED = 75  # bcos_jax.main's status when SIGTERM stopped it with its checkpoint saved


def free_port() -> int:
  """A localhost TCP port nothing listens on (the coordinator binds it next)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def process_environment(index: int, count: int, devices: int, port: int,
                        base: dict[str, str]) -> dict[str, str]:
  """The environment of process `index`: its place in the run and its CPU devices."""
  flags_without_count = [f for f in base.get("XLA_FLAGS", "").split()
                         if not f.startswith("--xla_force_host_platform_device_count")]
  return {**base,
          "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
          "JAX_NUM_PROCESSES": str(count), "JAX_PROCESS_ID": str(index),
          "JAX_PLATFORMS": "cpu", "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo",
          "XLA_FLAGS": " ".join([*flags_without_count,
                                 f"--xla_force_host_platform_device_count={devices}"]),
          "PYTHONUNBUFFERED": "1"}


# Gloo's C++ logs one line per device and peer at start-up (16 lines for 2 × 4 devices).
_NOISE = ("[Gloo] Rank ",)


def _relay(index: int, stream, lock: threading.Lock) -> None:
  """Copies one process's output to ours, each line prefixed with its index."""
  for line in stream:
    if line.startswith(_NOISE):
      continue
    with lock:
      sys.stdout.write(f"[{index}] {line}")
      sys.stdout.flush()


def _stop(processes: list[subprocess.Popen], grace_s: float) -> None:
  """SIGTERM to every running process; SIGKILL to those still running after `grace_s`
  (a survivor of a failed peer may wait in a collective that never completes)."""
  for process in processes:
    if process.poll() is None:
      process.send_signal(signal.SIGTERM)
  deadline = time.monotonic() + grace_s
  for process in processes:
    try:
      process.wait(timeout=max(deadline - time.monotonic(), 0))
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait()


def run(main_args: list[str], count: int, devices: int, grace_s: float) -> int:
  """Starts `count` processes of bcos_jax.main and waits for all; the launcher's status."""
  port = free_port()
  lock = threading.Lock()
  processes, relays = [], []
  for index in range(count):
    process = subprocess.Popen(
        [sys.executable, "-m", "bcos_jax.main", *main_args],
        env=process_environment(index, count, devices, port, dict(os.environ)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    processes.append(process)
    relays.append(threading.Thread(target=_relay, args=(index, process.stdout, lock),
                                   daemon=True))
    relays[-1].start()

  def pass_on(signum, frame):  # a preempted host: every process saves the same step
    del frame
    for process in processes:
      if process.poll() is None:
        process.send_signal(signum)

  signal.signal(signal.SIGTERM, pass_on)
  status = 0
  try:
    while None in [process.poll() for process in processes]:  # polls every one
      failed = [(i, p.returncode) for i, p in enumerate(processes)
                if p.returncode not in (None, 0, STOPPED)]
      if failed:
        index, code = failed[0]
        with lock:
          print(f"launch/local.py: process {index} failed (exit status {code}); stopping the "
                f"other {count - 1}", file=sys.stderr, flush=True)
        _stop(processes, grace_s)
        status = code if code > 0 else 1  # killed by a signal: a negative code
        break
      time.sleep(0.2)
  except KeyboardInterrupt:
    _stop(processes, grace_s)
    status = 130
  for relay in relays:
    relay.join(timeout=5)
  if status:
    return status
  codes = [p.returncode for p in processes]
  failed = [(i, c) for i, c in enumerate(codes) if c not in (0, STOPPED)]
  if failed:
    index, code = failed[0]
    print(f"launch/local.py: process {index} failed (exit status {code})", file=sys.stderr)
    return code if code > 0 else 1
  return STOPPED if STOPPED in codes else 0


def main(argv: list[str]) -> None:
  main_args = argv[1:]
  if not main_args:
    raise app.UsageError("give the flags of bcos_jax.main after --, e.g. "
                         "-- --config=configs/digits.py --workdir=/tmp/run")
  sys.exit(run(main_args, _PROCESSES.value, _DEVICES.value, _GRACE.value))


if __name__ == "__main__":
  app.run(main)
