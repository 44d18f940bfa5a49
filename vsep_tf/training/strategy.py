"""tf.distribute strategy factory: default, Mirrored (GPUs, or logical CPU devices) and MultiWorkerMirrored."""
from __future__ import annotations

import json
import os

import tensorflow as tf

STRATEGIES = ("default", "mirrored", "multi_worker")


def configure_cpu_devices(num_devices: int):
  """Splits the physical CPU into `num_devices` logical devices (must run before TF initialises its runtime)."""
  cpus = tf.config.list_physical_devices("CPU")
  current = tf.config.get_logical_device_configuration(cpus[0])
  if num_devices <= 1 or (current and len(current) == num_devices):
    return
  try:
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)])
  except RuntimeError as e:
    raise RuntimeError(
        f"Cannot split the CPU into {num_devices} logical devices: TensorFlow's runtime is already "
        "initialised. Call get_strategy() before creating any tensor.") from e


def set_tf_config(worker_hosts, task_index: int, task_type: str = "worker") -> str:
  """Writes TF_CONFIG for a cluster of `worker_hosts` ('host:port' strings; worker 0 is the chief) with this
  process as `task_type`:`task_index`. Must run before MultiWorkerMirroredStrategy is created. Returns the JSON."""
  hosts = [h.strip() for h in (worker_hosts.split(",") if isinstance(worker_hosts, str) else worker_hosts)
           if h.strip()]
  if not hosts:
    raise ValueError("worker_hosts is empty")
  if not 0 <= task_index < len(hosts):
    raise ValueError(f"task_index={task_index} outside the {len(hosts)} worker hosts")
  text = json.dumps({"cluster": {"worker": hosts}, "task": {"type": task_type, "index": int(task_index)}})
  os.environ["TF_CONFIG"] = text
  return text


def get_strategy(name: str = "default", num_cpu_devices: int = 1,
                 collective_timeout_seconds: float = 0.0) -> tf.distribute.Strategy:
  """The tf.distribute strategy called `name`.

  default:      the default (single-device) strategy.
  mirrored:     MirroredStrategy over all GPUs, or over `num_cpu_devices` logical CPU devices when there is no
                GPU (how the tests and this 2-core machine exercise synchronous data parallelism).
  multi_worker: MultiWorkerMirroredStrategy; the cluster and this worker's role come from TF_CONFIG
                (see set_tf_config). `collective_timeout_seconds` > 0 bounds every collective: a lost peer
                makes the run fail with DeadlineExceeded/Unavailable instead of hanging.
  """
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if tf.config.list_physical_devices("GPU"):
      return tf.distribute.MirroredStrategy()
    configure_cpu_devices(num_cpu_devices)
    devices = [d.name for d in tf.config.list_logical_devices("CPU")][:max(num_cpu_devices, 1)]
    # NCCL is GPU-only; on CPU devices reduce through one device.
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise ValueError("--strategy=multi_worker needs TF_CONFIG (cluster spec and this worker's task)")
    options = tf.distribute.experimental.CommunicationOptions(
        timeout_seconds=collective_timeout_seconds if collective_timeout_seconds > 0 else None,
        implementation=tf.distribute.experimental.CommunicationImplementation.RING)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
  raise ValueError(f"unknown strategy {name!r}; choose from {STRATEGIES}")


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """True on the worker that writes the real checkpoints and summaries (always true off multi-worker)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return True
  task_type, task_id = resolver.task_type, resolver.task_id
  if task_type is None:
    return True
  has_chief = "chief" in json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
  return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def worker_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
  """Where this worker writes: `model_dir` on the chief, a private scratch dir on the others (every worker
  must take part in a multi-worker save, but only the chief's files are the real ones)."""
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, ".workers", f"{resolver.task_type}_{resolver.task_id}")
