r"""Compare separators on one dataset: a Markdown table and a bar chart of per-source SI-SDR and SDR.

  # evaluate models and baselines now (vsep_tf.evaluate's library function, same data flags)
  python -m tools.compare_separators --model_dirs=runs/chorales_nmf,runs/chorales_var --methods=oracle_irm,mixture \
      --dataset=stems --data_root=../shared/data/chorales --split=test \
      --output_md=runs/compare_chorales.md --output_png=runs/compare_chorales.png --results_dir=runs/compare_chorales
  # or tabulate results already written by `python -m vsep_tf.evaluate --output_json=...`
  python -m tools.compare_separators --results=a.json,b.json --output_md=cmp.md --output_png=cmp.png

Rows are the separators (method, and the model directory's name), columns the per-source SI-SDR and SDR
(median over tracks) and the overall values (median over sources; 'mean' columns: mean over sources). With
--results_dir every fresh evaluation is also saved as <results_dir>/<label>.json. The chart needs matplotlib
(the 'plots' extra: pip install -e ".[plots]"); without it the Markdown is still written and the tool fails
with a clear message.
"""
from __future__ import annotations

import json
import math
import os
import re
import sys
from typing import Dict, List, Optional, Sequence

from absl import app, flags

from vsep_tf import evaluate as evaluate_lib

FLAGS = flags.FLAGS


def define_flags(fv: flags.FlagValues):
  evaluate_lib.define_data_flags(fv)
  flags.DEFINE_list("model_dirs", [], "Model directories to evaluate (comma list).", flag_values=fv)
  flags.DEFINE_list("methods", [], f"Baselines to evaluate (comma list of {list(evaluate_lib.BASELINES)}).",
                    flag_values=fv)
  flags.DEFINE_list("results", [], "Existing result JSONs of vsep_tf.evaluate to include (comma list).",
                    flag_values=fv)
  flags.DEFINE_string("results_dir", None, "Also save every fresh evaluation here as <label>.json.", flag_values=fv)
  flags.DEFINE_string("output_md", None, "Write the Markdown table here.", flag_values=fv)
  flags.DEFINE_string("output_png", None, "Write the bar chart here (needs matplotlib).", flag_values=fv)
  return fv


def label_of(result: Dict) -> str:
  """A row label: the method, plus the model directory's name for trained models."""
  model_dir = result.get("model_dir")
  if model_dir:
    return f"{result.get('method', '?')} ({os.path.basename(os.path.normpath(model_dir))})"
  return str(result.get("method", "?"))


def _num(v) -> float:
  return math.nan if v is None else float(v)


def _cell(v) -> str:
  v = _num(v)
  return "n/a" if math.isnan(v) else f"{v:.2f}"


def check_comparable(results: Sequence[Dict]):
  """All results must be on the same sources (same dataset); a different split / track count is flagged."""
  names = [tuple(r.get("source_names") or r["sources"]) for r in results]
  if len(set(names)) > 1:
    raise ValueError(f"results are on different sources: {sorted(set(names))}")
  notes = []
  keys = {(r.get("dataset"), r.get("split"), r.get("num_tracks")) for r in results}
  if len(keys) > 1:
    notes.append(f"WARNING: results come from different data (dataset, split, tracks): {sorted(keys, key=str)}")
  return notes


def markdown_table(results: Sequence[Dict], labels: Sequence[str]) -> str:
  """Rows = separators; columns = per-source SI-SDR and SDR, then overall SI-SDR, SI-SDRi, SDR (medians over
  sources) and mean SDR over sources."""
  if not results:
    raise ValueError("no results to compare")
  notes = check_comparable(results)
  names = list(results[0].get("source_names") or results[0]["sources"])
  cols = [f"{n} SI-SDR" for n in names] + [f"{n} SDR" for n in names]
  cols += ["overall SI-SDR", "overall SI-SDRi", "overall SDR", "mean SDR"]
  lines = ["| separator | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
  for label, r in zip(labels, results):
    src = r["sources"]
    cells = [_cell(src[n].get("si_sdr")) for n in names] + [_cell(src[n].get("sdr")) for n in names]
    overall, mean = r.get("overall", {}), r.get("overall_mean", {})
    cells += [_cell(overall.get("si_sdr")), _cell(overall.get("si_sdri")), _cell(overall.get("sdr")),
              _cell(mean.get("sdr"))]
    lines.append(f"| {label} | " + " | ".join(cells) + " |")
  first = results[0]
  where = f"{first.get('dataset')}/{first.get('split')}, {first.get('num_tracks')} tracks"
  head = (f"Separators on {where}: median over tracks per source (dB); overall = median over sources, "
          "mean SDR = mean over sources. SDR etc.: museval BSSEval v4 (1 s frames); SI-SDR over whole tracks.")
  return "\n".join([head, ""] + lines + ([""] + notes if notes else [])) + "\n"


def bar_chart(results: Sequence[Dict], labels: Sequence[str], path: str):
  """Grouped bars (one group per source + overall, one bar per separator) for SI-SDR and SDR."""
  try:
    import matplotlib  # pylint: disable=import-outside-toplevel
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise RuntimeError(f"--output_png needs matplotlib ({e}): pip install -e \".[plots]\"") from e
  import numpy as np  # pylint: disable=import-outside-toplevel
  names = list(results[0].get("source_names") or results[0]["sources"])
  groups = names + ["overall"]
  fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(groups) * 2), 4.5), squeeze=False)
  width = 0.8 / max(len(results), 1)
  x = np.arange(len(groups))
  for ax, metric, title in zip(axes[0], ("si_sdr", "sdr"), ("SI-SDR (dB)", "SDR, BSSEval v4 (dB)")):
    for i, (label, r) in enumerate(zip(labels, results)):
      vals = [_num(r["sources"][n].get(metric)) for n in names] + [_num(r.get("overall", {}).get(metric))]
      ax.bar(x + (i - (len(results) - 1) / 2) * width, np.nan_to_num(vals, nan=0.0), width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(groups, rotation=20)
    ax.set_title(title)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.grid(axis="y", alpha=0.3)
  axes[0][0].legend(fontsize=8)
  first = results[0]
  fig.suptitle(f"{first.get('dataset')}/{first.get('split')}, {first.get('num_tracks')} tracks (median over tracks)")
  fig.tight_layout()
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fig.savefig(path, dpi=110)
  plt.close(fig)


def _safe(label: str) -> str:
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "result"


def collect_results(fv, result_paths: Sequence[str], model_dirs: Sequence[str], methods: Sequence[str],
                    results_dir: Optional[str] = None) -> List[Dict]:
  """Loads the given result JSONs, then evaluates every model dir and baseline on the flags' dataset."""
  results = []
  for path in result_paths:
    if not os.path.exists(path):
      raise FileNotFoundError(f"--results: {path} does not exist")
    with open(path, encoding="utf-8") as f:
      r = json.load(f)
    if "sources" not in r or "overall" not in r:
      raise ValueError(f"{path} is not a vsep_tf.evaluate result (no 'sources' / 'overall')")
    results.append(r)
  for method in methods:
    if method not in evaluate_lib.BASELINES:
      raise ValueError(f"unknown --methods entry {method!r}; baselines are {evaluate_lib.BASELINES}")
  for model_dir in model_dirs:
    evaluate_lib.check_model_dir(model_dir)
  todo = [("model_dir", d) for d in model_dirs] + [("method", m) for m in methods]
  for kind, what in todo:
    opts = evaluate_lib.options_from_flags(fv, what if kind == "model_dir" else None)
    r = evaluate_lib.evaluate(opts, **{kind: what})
    if results_dir:
      evaluate_lib.write_results(r, os.path.join(results_dir, _safe(label_of(r)) + ".json"))
    results.append(r)
  return results


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if not (FLAGS.results or FLAGS.model_dirs or FLAGS.methods):
    print("compare_separators: error: nothing to compare: pass --results, --model_dirs and/or --methods",
          file=sys.stderr)
    return 1
  try:
    results = collect_results(FLAGS, FLAGS.results, FLAGS.model_dirs, FLAGS.methods, FLAGS.results_dir)
    labels = [label_of(r) for r in results]
    seen = {}
    for i, label in enumerate(labels):  # make repeated labels unique
      seen[label] = seen.get(label, 0) + 1
      if seen[label] > 1:
        labels[i] = f"{label} #{seen[label]}"
    text = markdown_table(results, labels)
  except (ValueError, FileNotFoundError) as e:
    print(f"compare_separators: error: {e}", file=sys.stderr)
    return 1
  print(text)
  if FLAGS.output_md:
    from vsep_tf import config as config_lib  # pylint: disable=import-outside-toplevel
    config_lib.atomic_write_text(FLAGS.output_md, text)
  if FLAGS.output_png:
    try:
      bar_chart(results, labels, FLAGS.output_png)
    except RuntimeError as e:
      print(f"compare_separators: error: {e}", file=sys.stderr)
      return 1
  return 0


if __name__ == "__main__":
  define_flags(FLAGS)
  app.run(main)
