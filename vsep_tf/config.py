"""`Config`: the resolved settings of a run or a model, as a plain read-only mapping (no absl below the CLIs).

A Config maps setting names to values: run settings ('job', 'train_steps', ...) and model hyperparameters
named '<family>.<argument>' ('spectral.n_fft', ...; registry.FAMILIES). The CLIs build one from their absl
flags (vsep_tf/run_flags.py); a model directory's manifest.json stores the model's own (vsep_tf/model_dir.py).
Library code reads it by attribute (`cfg.job`) or key (`cfg["spectral.n_fft"]`) and never changes it:
`replace(...)` and `with_overrides([...])` return new Configs.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from typing import Any, Iterable


class Config(Mapping):
  """Read-only {setting name: value} with attribute access. See the module docstring."""

  def __init__(self, values: Mapping[str, Any] = ()):
    object.__setattr__(self, "_values", dict(values))

  def __getitem__(self, name: str):
    return self._values[name]

  def __iter__(self):
    return iter(self._values)

  def __len__(self):
    return len(self._values)

  def __getattr__(self, name: str):
    try:
      return self._values[name]
    except KeyError:
      raise AttributeError(f"no setting {name!r}") from None

  def __setattr__(self, name, value):
    raise AttributeError("Config is read-only: use replace(...)")

  def __repr__(self):
    return f"Config({self._values!r})"

  def replace(self, **changes) -> "Config":
    """A copy with `changes` applied (names with dots: replace(**{'spectral.n_fft': 2048}))."""
    unknown = sorted(set(changes) - set(self._values))
    if unknown:
      raise KeyError(f"unknown settings {unknown}")
    return Config({**self._values, **changes})

  def with_overrides(self, overrides: Iterable[str]) -> "Config":
    """A copy with '--name=value' strings applied ('--name' / '--noname' for booleans), each value parsed
    as the type of the setting it replaces."""
    changes = {}
    for item in overrides:
      name, value = parse_override(item, self._values)
      changes[name] = value
    return self.replace(**changes)

  def to_dict(self) -> dict:
    return dict(self._values)


def _parse_bool(text: str) -> bool:
  low = text.strip().lower()
  if low in ("1", "true", "t", "yes"):
    return True
  if low in ("0", "false", "f", "no"):
    return False
  raise ValueError(f"not a boolean: {text!r}")


def parse_override(item: str, current: Mapping[str, Any]):
  """'--name=value' -> (name, value typed like current[name]). Raises ValueError for unknown names."""
  if not item.startswith("--"):
    raise ValueError(f"override {item!r} must look like --name=value")
  body = item[2:]
  name, has_value, text = body.partition("=")
  if not has_value:  # bare boolean: --flag / --noflag
    if name in current and isinstance(current[name], bool):
      return name, True
    if name.startswith("no") and isinstance(current.get(name[2:]), bool):
      return name[2:], False
    raise ValueError(f"override {item!r}: no boolean setting of that name (use --name=value)")
  if name not in current:
    raise ValueError(f"override {item!r}: unknown setting {name!r}")
  old = current[name]
  if isinstance(old, bool):
    return name, _parse_bool(text)
  if isinstance(old, int):
    return name, int(text)
  if isinstance(old, float):
    return name, float(text)
  if isinstance(old, (list, tuple)):
    return name, [v for v in text.split(",") if v]
  return name, text


def flagfile_text(cfg: Mapping[str, Any]) -> str:
  """The settings as absl flagfile text, one '--name=value' a line, sorted; None values left out."""
  lines = []
  for name in sorted(cfg):
    value = cfg[name]
    if value is None:
      continue
    if isinstance(value, bool):
      lines.append(f"--{name}" if value else f"--no{name}")
    elif isinstance(value, (list, tuple)):
      lines.append(f"--{name}={','.join(str(v) for v in value)}")
    else:
      lines.append(f"--{name}={value}")
  return "\n".join(lines) + "\n"


def atomic_write_text(path: str, text: str):
  """Writes `text` to `path` via a temporary file + os.replace: readers never see half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
  try:
    with os.fdopen(fd, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise
