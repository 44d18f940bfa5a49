"""Lists of Keras 3 sublayers that tf.train.Checkpoint can see.

Keras 3 wraps a list attribute of layers in its own TrackedList: Keras (weights, .keras / .weights.h5 files) sees the
layers inside, but tf.train.Checkpoint does not traverse it, so a checkpoint of a model holding `self.blocks = [...]`
silently saves none of those weights (and restoring with assert_consumed() still passes). Every layer is therefore
assigned as its own attribute, `<name>_0, <name>_1, ...`, and read back as a list through `get_layer_list`.
"""
from __future__ import annotations


def set_layer_list(owner, name, layers):
  """owner.<name>_i = layers[i] for every i (each a tracked attribute); returns the list."""
  layers = list(layers)
  for i, layer in enumerate(layers):
    setattr(owner, f"{name}_{i}", layer)
  setattr(owner, f"_num_{name}", len(layers))
  return layers


def get_layer_list(owner, name):
  """[owner.<name>_0, owner.<name>_1, ...] as set by `set_layer_list`."""
  return [getattr(owner, f"{name}_{i}") for i in range(getattr(owner, f"_num_{name}"))]
