"""Data pipelines: one module per dataset family, built by name from an explicit registry.

  DATASETS = {'toy': ToyData, 'stems': StemFolder, 'musdb': MusdbData}
  build_dataset(name, **kwargs) -> DATASETS[name](**kwargs)

Every family follows `base.SourceDataset`: source_names, sample_rate, mix / mix_fn, and
solo(...) (prior training), mixtures(...) (variational training, validation), tracks(...) (evaluation).
MusdbData imports the musdb package only when constructed.
"""
from vsep_tf.data.base import SourceDataset
from vsep_tf.data.mixing import MIXES, get_mix_fn, mix_sources
from vsep_tf.data.musdb import MusdbData
from vsep_tf.data.stems import StemFolder
from vsep_tf.data.toy import ToyData

DATASETS = {
    "toy": ToyData,
    "stems": StemFolder,
    "musdb": MusdbData,
}


def build_dataset(name: str, **kwargs) -> SourceDataset:
  """The dataset family `name` (a key of DATASETS) built with its constructor's keyword arguments."""
  if name not in DATASETS:
    raise ValueError(f"unknown dataset {name!r}; choose from {sorted(DATASETS)}")
  return DATASETS[name](**kwargs)


__all__ = ["DATASETS", "MIXES", "MusdbData", "SourceDataset", "StemFolder", "ToyData", "build_dataset",
           "get_mix_fn", "mix_sources"]
