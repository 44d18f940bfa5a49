r"""Writes the thesis's toy data to disk in the stem-folder layout, so StemFolder(mix='mean') reads it back.

  python -m tools.make_toy_data --output_dir=/data/toy --num_train=5000 --num_test=1500 --seed=0

Layout (MUSDB18-HQ style):

  <output_dir>/{train,test}/item_NNNNN/{mixture,sine,square,sawtooth,triangle}.<wav|flac>
  <output_dir>/toy_data.json          the recipe parameters (seed, counts, length, rate, format)

Items are exactly ToyData(seed).tracks(split) (vsep_tf/data/toy.py): mixture = mean of the four sources.
--format=wav writes 32-bit float WAV (bit-exact round trip); --format=flac writes 24-bit FLAC (error below
2^-23 of full scale). The thesis's 5000 + 1500 items take about 6.2 GB as float WAV.

An existing non-empty --output_dir is an error unless --overwrite; --overwrite only replaces a folder this
tool made (it holds toy_data.json), never other data.
"""
from __future__ import annotations

import json
import os
import shutil
import sys

from absl import app
from absl import flags

FORMATS = {"wav": ("wav", "FLOAT"), "flac": ("flac", "PCM_24")}
MANIFEST = "toy_data.json"


def define_flags(fv: flags.FlagValues = flags.FLAGS) -> None:
  """The CLI flags, defined on `fv` only when the tool runs (importing the module defines none, so it
  cannot clash with other tools' flags in one process)."""
  flags.DEFINE_string("output_dir", None, "Destination folder (created).", flag_values=fv)
  flags.DEFINE_integer("num_train", 5000, "Train items (the thesis: 5000).", flag_values=fv)
  flags.DEFINE_integer("num_test", 1500, "Test items (the thesis: 1500).", flag_values=fv)
  flags.DEFINE_integer("seed", 0, "ToyData seed (evaluate models on a seed they were not trained on).",
                       flag_values=fv)
  flags.DEFINE_integer("length", 48000, "Samples per item (the thesis: 48000).", flag_values=fv)
  flags.DEFINE_enum("format", "wav", sorted(FORMATS), "wav: 32-bit float; flac: 24-bit integer.",
                    flag_values=fv)
  flags.DEFINE_boolean("overwrite", False, "Replace an output folder previously written by this tool.",
                       flag_values=fv)


class OutputExistsError(FileExistsError):
  """The output folder exists and may not be replaced."""


def _prepare(output_dir: str, overwrite: bool) -> None:
  if os.path.exists(output_dir) and not os.path.isdir(output_dir):
    raise OutputExistsError(f"{output_dir} exists and is not a folder")
  if not os.path.isdir(output_dir) or not os.listdir(output_dir):
    os.makedirs(output_dir, exist_ok=True)
    return
  if not overwrite:
    raise OutputExistsError(f"{output_dir} exists and is not empty; pass --overwrite to replace it")
  if not os.path.isfile(os.path.join(output_dir, MANIFEST)):
    raise OutputExistsError(f"{output_dir} is not empty and holds no {MANIFEST}: it was not written by "
                            "make_toy_data, so --overwrite will not delete it; choose another --output_dir")
  os.remove(os.path.join(output_dir, MANIFEST))
  for split in ("train", "test"):
    shutil.rmtree(os.path.join(output_dir, split), ignore_errors=True)


def make_toy_data(output_dir, num_train: int = 5000, num_test: int = 1500, seed: int = 0,
                  length: int = 48000, fmt: str = "wav", overwrite: bool = False) -> dict:
  """Writes ToyData(seed) items in the stem-folder layout. Returns the manifest (also written as JSON).

  Raises OutputExistsError (see the module docstring) and ValueError for bad arguments.
  """
  output_dir = os.fspath(output_dir)
  if fmt not in FORMATS:
    raise ValueError(f"format must be one of {sorted(FORMATS)}, got {fmt!r}")
  if num_train < 0 or num_test < 0 or num_train + num_test == 0:
    raise ValueError(f"need num_train, num_test >= 0 and at least one item, got {num_train}, {num_test}")
  if length <= 0:
    raise ValueError(f"length must be positive, got {length}")
  if seed < 0:
    raise ValueError(f"seed must be >= 0, got {seed}")
  _prepare(output_dir, overwrite)  # before importing TensorFlow: a refused output fails fast
  from vsep_tf import audio  # pylint: disable=import-outside-toplevel
  from vsep_tf.data import toy  # pylint: disable=import-outside-toplevel
  ext, subtype = FORMATS[fmt]
  counts = {"train": int(num_train), "test": int(num_test)}
  data = toy.ToyData(seed=seed, item_length=length, num_items={s: n for s, n in counts.items() if n > 0})
  for split, n in counts.items():
    if n == 0:
      continue
    for name, mix, sources in data.tracks(split):
      item_dir = os.path.join(output_dir, split, name)
      os.makedirs(item_dir, exist_ok=True)
      audio.write_audio(os.path.join(item_dir, f"mixture.{ext}"), mix, data.sample_rate, subtype=subtype)
      for k, source in enumerate(data.source_names):
        audio.write_audio(os.path.join(item_dir, f"{source}.{ext}"), sources[k], data.sample_rate,
                          subtype=subtype)
  manifest = {
      "recipe": "thesis ToyData (vsep_tf.data.toy)", "seed": int(seed), "num_items": counts,
      "length": int(length), "sample_rate": data.sample_rate, "sources": list(data.source_names),
      "mix": data.mix, "format": fmt, "subtype": subtype,
  }
  with open(os.path.join(output_dir, MANIFEST), "w", encoding="utf-8") as f:
    json.dump(manifest, f, indent=2)
  return manifest


def main(argv, fv: flags.FlagValues = flags.FLAGS):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not fv.output_dir:
    raise app.UsageError("--output_dir is required")
  try:
    manifest = make_toy_data(fv.output_dir, fv.num_train, fv.num_test, fv.seed, fv.length, fv.format,
                             fv.overwrite)
  except (OutputExistsError, ValueError) as e:
    print(f"make_toy_data: error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {manifest['num_items']} toy items ({manifest['format']}) to {fv.output_dir}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
