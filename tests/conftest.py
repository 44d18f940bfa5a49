"""Test session set-up: split the CPU into 2 logical devices before TensorFlow initialises, so MirroredStrategy
tests run real synchronous data parallelism on this CPU-only machine (the default strategy uses /CPU:0)."""
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from vsep_tf.training import strategy as strategy_lib  # noqa: E402

strategy_lib.configure_cpu_devices(2)

REPO = Path(__file__).resolve().parents[1]
CHORALES = REPO.parent / "shared" / "data" / "chorales"


@pytest.fixture
def chorales_root():
  if not CHORALES.is_dir():
    pytest.skip(f"{CHORALES} not present")
  return CHORALES
