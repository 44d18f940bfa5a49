"""Scale-out and faults, with real `python -m vsep_tf.train` subprocesses: two-worker MultiWorkerMirrored
training matches one process, SIGKILL mid-run resumes from the last checkpoint, a NaN loss stops the run with
the step and batch named (the default run; the others are -m slow). Every subprocess has a timeout: a hang fails
the test instead of blocking CI."""
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 120  # seconds, per subprocess

TINY = ["--job=priors", "--dataset=toy", "--prior=wavenet", "--crop_length=256", "--batch_size=4",
        "--wavenet.num_blocks=1", "--wavenet.num_layers=3", "--wavenet.residual_channels=8",
        "--wavenet.skip_channels=8", "--wavenet.cond_channels=8", "--wavenet.num_mixtures=2",
        "--audio_summary_seconds=0", "--warmup_steps=1", "--learning_rate=3e-3", "--p_clean=1.0", "--seed=3"]


def free_ports(n):
  socks = [socket.socket() for _ in range(n)]
  for s in socks:
    s.bind(("127.0.0.1", 0))
  ports = [s.getsockname()[1] for s in socks]
  for s in socks:
    s.close()
  return ports


def env():
  e = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", PYTHONPATH=str(REPO))
  e.pop("TF_CONFIG", None)
  return e


def train_cmd(model_dir, *extra):
  return [sys.executable, "-m", "vsep_tf.train", f"--model_dir={model_dir}", *TINY, *extra]


def run(cmd, timeout=TIMEOUT):
  return subprocess.run(cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=timeout)


def final_line(stdout):
  values = {}
  for line in stdout.splitlines():
    if line.startswith("final "):
      values.update(kv.split("=", 1) for kv in line.split()[1:])
    if line.startswith("weights_sha256="):
      values["sha256"] = line.split("=", 1)[1]
  return values


@pytest.mark.slow  # 80 s of tracing in three processes: the slow lane
def test_two_workers_match_one_process(tmp_path):
  """Two MultiWorkerMirrored workers on 127.0.0.1 (2 x 1 replica, global batch 4) end with identical weights,
  and their loss equals a single-process run on the same global batch."""
  hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
  common = ["--strategy=multi_worker", f"--worker_hosts={hosts}", "--train_steps=6", "--steps_per_loop=3",
            "--checkpoint_every=6", "--collective_timeout_seconds=60"]
  procs = [subprocess.Popen(train_cmd(tmp_path / "mw", *common, f"--task_index={i}"), cwd=REPO, env=env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=TIMEOUT)
      assert p.returncode == 0, err[-3000:]
      outs.append(final_line(out))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  # The single-process reference, in this process (default strategy, one device, the same global batch).
  from vsep_tf import run_flags  # pylint: disable=import-outside-toplevel
  from vsep_tf.training import trainer as trainer_lib  # pylint: disable=import-outside-toplevel
  cfg = run_flags.parse_flags([f"--model_dir={tmp_path / 'single'}", *TINY, "--train_steps=6", "--steps_per_loop=3",
                               "--checkpoint_every=6"])
  single = trainer_lib.PriorTrainer(cfg)
  ref = {"total_loss": single.train()["total_loss"], "step": str(int(single.step.numpy()))}

  chief, worker = outs
  assert chief["sha256"] == worker["sha256"]  # synchronous: bit-identical weights on both workers
  assert chief["step"] == worker["step"] == ref["step"] == "6"
  np.testing.assert_allclose(float(chief["total_loss"]), float(ref["total_loss"]), rtol=1e-3, atol=1e-3)
  # Only the chief writes the real checkpoint; the other worker's save goes to its scratch dir.
  assert tf.train.latest_checkpoint(str(tmp_path / "mw" / "checkpoints")).endswith("ckpt-6")
  scratch = tmp_path / "mw" / ".workers" / "worker_1" / "checkpoints"
  assert tf.train.latest_checkpoint(str(scratch)).endswith("ckpt-6")
  a = tf.train.load_checkpoint(str(tmp_path / "mw" / "checkpoints" / "ckpt-6"))
  b = tf.train.load_checkpoint(str(scratch / "ckpt-6"))
  for name in a.get_variable_to_shape_map():
    np.testing.assert_array_equal(a.get_tensor(name), b.get_tensor(name), err_msg=name)


@pytest.mark.slow  # long: the slow lane (pytest -m slow, a CI lane of its own)
def test_sigkill_resumes_from_last_checkpoint(tmp_path):
  """SIGKILL after the first checkpoint: the rerun restores the latest complete checkpoint (no corrupt files)
  and trains on to --train_steps; at most the steps since that checkpoint are lost."""
  args = ["--train_steps=400", "--steps_per_loop=5", "--checkpoint_every=10", "--max_checkpoints=2"]
  ckpt_dir = tmp_path / "checkpoints"
  proc = subprocess.Popen(train_cmd(tmp_path, *args), cwd=REPO, env=env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
  try:
    deadline = time.monotonic() + TIMEOUT
    while not (ckpt_dir / "checkpoint").exists():
      assert proc.poll() is None, "training exited before its first checkpoint"
      assert time.monotonic() < deadline, "no checkpoint before the timeout"
      time.sleep(0.2)
    time.sleep(np.random.default_rng().uniform(0.0, 2.0))  # a random step after the first checkpoint
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
  finally:
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode == -signal.SIGKILL
  latest = tf.train.latest_checkpoint(str(ckpt_dir))
  assert latest is not None
  killed_at = int(latest.rsplit("-", 1)[1])
  # Every checkpoint the state file lists is complete and readable, and step == its number.
  for path in tf.train.get_checkpoint_state(str(ckpt_dir)).all_model_checkpoint_paths:
    reader = tf.train.load_checkpoint(path)
    assert int(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE")) == int(path.rsplit("-", 1)[1])
  assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp-")]  # config written atomically

  rerun = run(train_cmd(tmp_path, *args[:1], "--train_steps=" + str(killed_at + 10), *args[1:]))
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  restored = re.search(r"restored \S+ at step (\d+)", rerun.stderr)
  assert restored and int(restored.group(1)) == killed_at  # continuity: resumes exactly where saved
  assert final_line(rerun.stdout)["step"] == str(killed_at + 10)
  assert tf.train.latest_checkpoint(str(ckpt_dir)).endswith(f"ckpt-{killed_at + 10}")


def test_nan_loss_stops_with_step_and_batch(tmp_path):
  from vsep_tf import train as train_lib  # pylint: disable=import-outside-toplevel
  res = run(train_cmd(tmp_path, "--train_steps=20", "--steps_per_loop=5", "--checkpoint_every=10",
                      "--debug_nan_at_step=13"))
  assert res.returncode == train_lib.EXIT_NON_FINITE_LOSS, res.stderr[-3000:]
  assert "non-finite loss at step 13 (batch index 12" in res.stderr
  dumped = np.load(tmp_path / "nan_batch.npz")
  assert int(dumped["batch_index"]) == 12
  assert any(np.isnan(dumped[k]).all() for k in dumped.files if k != "batch_index")
  # The checkpoint before the bad step is intact and is not overwritten by the poisoned update.
  assert tf.train.latest_checkpoint(str(tmp_path / "checkpoints")).endswith("ckpt-10")


def _start_workers(model_dir, hosts, args):
  return [subprocess.Popen(train_cmd(model_dir, "--strategy=multi_worker", f"--worker_hosts={hosts}",
                                     f"--task_index={i}", *args), cwd=REPO, env=env(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True) for i in range(2)]


@pytest.mark.slow
def test_lost_worker_fails_cleanly_and_resumes(tmp_path):
  """Worker 1 is SIGKILLed after the first checkpoint: the chief fails (non-zero exit) within the collective
  timeout instead of hanging; restarting both workers resumes from the chief's last checkpoint (BackupAndRestore
  semantics) and reaches --train_steps."""
  hosts = ",".join(f"127.0.0.1:{p}" for p in free_ports(2))
  args = ["--train_steps=100000", "--steps_per_loop=5", "--checkpoint_every=10", "--collective_timeout_seconds=15"]
  ckpt_dir = tmp_path / "checkpoints"
  procs = _start_workers(tmp_path, hosts, args)
  try:
    deadline = time.monotonic() + TIMEOUT
    while not (ckpt_dir / "checkpoint").exists():
      assert all(p.poll() is None for p in procs), "a worker exited before the first checkpoint"
      assert time.monotonic() < deadline, "no checkpoint before the timeout"
      time.sleep(0.2)
    procs[1].send_signal(signal.SIGKILL)
    t0 = time.monotonic()
    _, err = procs[0].communicate(timeout=TIMEOUT)  # a hang fails here
    failed_after = time.monotonic() - t0
    assert procs[0].returncode != 0, "the chief must fail when a worker is lost"
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  print(f"chief failed {failed_after:.1f}s after the worker was lost: {err.strip().splitlines()[-1]}")
  saved = int(tf.train.latest_checkpoint(str(ckpt_dir)).rsplit("-", 1)[1])
  target = saved + 10
  procs = _start_workers(tmp_path, hosts, [f"--train_steps={target}", *args[1:]])
  outs = []
  try:
    for p in procs:
      out, err = p.communicate(timeout=TIMEOUT)
      assert p.returncode == 0, err[-3000:]
      assert re.search(rf"restored \S+ at step {saved}\b", err), err[-3000:]
      outs.append(final_line(out))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert outs[0]["step"] == outs[1]["step"] == str(target)
  assert outs[0]["sha256"] == outs[1]["sha256"]
