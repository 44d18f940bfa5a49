"""Prior confusion: the diagnostic the thesis lacked.

For every prior k and every source class j, the mean log-likelihood per sample that prior k gives to held-out
solo examples of class j, noised at level sigma:

    C[sigma][k, j] = mean_n  log p_{k,sigma}(x_{j,n} + sigma * eps) / T          (nats per sample)

A prior set fit for separation has, at every sigma, each row's maximum on the diagonal (prior k prefers its own
class: "row rank") and ideally each column's maximum on the diagonal too (class j is best explained by its own
prior: "column rank").

Score priors (vsep_tf/priors/score.py) have no density; for them the table holds the negative denoising error,

    C[sigma][k, j] = -mean_n  |D_k(x_{j,n} + sigma * eps, sigma) - x_{j,n}|^2 / (T sigma^2)     (sigma > 0 only)

(the integrand of the diffusion ELBO at that level: higher is better, ranked the same way).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf


def log_likelihood_table(priors, examples, sigmas, batch_size=8, seed=0, per_example=False):
  """C: float64 [num_sigmas, K priors, K classes], nats per sample.

  With per_example=True also returns L: float64 [num_sigmas, K priors, K classes, n], each example's score.

  priors:   {name: Prior}; examples: {name: float32 [n, T]} held-out solo crops (same names and order).
  sigmas:   noise levels (0 = noiseless). The same noise draw is used for every prior.
  """
  names = list(priors)
  if set(names) != set(examples):
    raise ValueError(f"priors {sorted(names)} and example classes {sorted(examples)} differ")
  n = len(next(iter(examples.values())))
  scores = np.zeros([len(sigmas), len(names), len(names), n])
  rng = np.random.default_rng(seed)
  for s, sigma in enumerate(sigmas):
    for j, data_name in enumerate(names):
      x = np.asarray(examples[data_name], np.float32)
      noisy = x + np.float32(sigma) * rng.standard_normal(x.shape).astype(np.float32)
      for k, prior_name in enumerate(names):
        prior = priors[prior_name]
        if prior.has_log_prob:
          scores[s, k, j] = _log_prob_per_sample(prior, noisy, sigma, batch_size)
        else:
          scores[s, k, j] = _neg_denoising_error(prior, x, noisy, sigma, batch_size)
  table = scores.mean(axis=-1)
  return (table, scores) if per_example else table


def example_accuracy(scores):
  """[num_sigmas, K classes]: fraction of class-j examples whose best-scoring prior is prior j."""
  best = scores.argmax(axis=1)  # [S, K classes, n]
  return (best == np.arange(scores.shape[1])[None, :, None]).mean(axis=-1)


def _log_prob_per_sample(prior, x, sigma, batch_size):
  """[n] log p_sigma(x_i) / T for each example."""
  return _in_batches(_compiled(prior, "log_prob"), x, sigma, batch_size) / x.shape[1]


def _neg_denoising_error(prior, clean, noisy, sigma, batch_size):
  """[n] -|D(noisy, sigma) - clean|^2 / (T sigma^2) for each example (score priors; sigma > 0)."""
  if sigma <= 0:
    raise ValueError("score priors are scored by denoising: every sigma must be > 0")
  den = _in_batches(_compiled(prior, "denoise"), noisy, sigma, batch_size)
  return -np.mean(np.square(den - clean), axis=-1) / sigma ** 2


def _in_batches(fn, x, sigma, batch_size):
  """fn(chunk, sigma [chunk]) over chunks of `batch_size` examples of x, outputs concatenated (numpy)."""
  out = []
  for start in range(0, len(x), batch_size):
    chunk = tf.constant(x[start:start + batch_size])
    out.append(fn(chunk, tf.fill([tf.shape(chunk)[0]], tf.constant(sigma, tf.float32))).numpy())
  return np.concatenate(out)


_COMPILED = {}


def _compiled(prior, method: str):
  """tf.function of prior.<method>(x, sigma), one per (prior, method) (the prior is kept alive with it)."""
  key = (id(prior), method)
  if key not in _COMPILED:
    _COMPILED[key] = (prior, tf.function(getattr(prior, method), reduce_retracing=True))
  return _COMPILED[key][1]


def summarize(table, names):
  """Per sigma: row-rank hits (prior prefers own class), column-rank hits, and the smallest row margin
  (own-class score minus the best other class, nats/sample; > 0 means every prior ranks its class first)."""
  out = []
  for c in table:
    diag = np.diag(c)
    off = c - np.diag(np.full(len(names), np.inf))
    row_margin = diag - off.max(axis=1)
    col_margin = diag - off.max(axis=0)
    out.append({"row_hits": int((row_margin > 0).sum()), "col_hits": int((col_margin > 0).sum()),
                "min_row_margin": float(row_margin.min()), "min_col_margin": float(col_margin.min())})
  return out


def format_table(table, names, sigmas, accuracy=None):
  """Markdown tables, one per sigma: rows = priors, columns = data classes; the row maximum in bold.
  accuracy: optional [num_sigmas, K] from `example_accuracy`, printed under each table."""
  summary = summarize(table, names)
  lines = []
  for s, sigma in enumerate(sigmas):
    info = summary[s]
    lines.append(f"sigma = {sigma:g}  (row hits {info['row_hits']}/{len(names)}, column hits "
                 f"{info['col_hits']}/{len(names)}, min row margin {info['min_row_margin']:+.3f} nats/sample)")
    lines.append("")
    lines.append("| prior \\ data | " + " | ".join(names) + " |")
    lines.append("|---|" + "---|" * len(names))
    for k, name in enumerate(names):
      row = table[s, k]
      cells = [f"**{v:.3f}**" if j == int(np.argmax(row)) else f"{v:.3f}" for j, v in enumerate(row)]
      lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if accuracy is not None:
      lines.append("| examples whose best prior is their own | "
                   + " | ".join(f"{100 * a:.0f}%" for a in accuracy[s]) + " |")
    lines.append("")
  return "\n".join(lines)


def plot_heatmaps(table, names, sigmas, path):
  """One heatmap per sigma, each row normalised (score minus the row maximum) so the ranking reads at a glance."""
  import matplotlib  # pylint: disable=import-outside-toplevel
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=import-outside-toplevel
  n = len(sigmas)
  cols = min(n, 4)
  rows = (n + cols - 1) // cols
  fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
  for s, sigma in enumerate(sigmas):
    ax = axes[s // cols][s % cols]
    rel = table[s] - table[s].max(axis=1, keepdims=True)
    ax.imshow(np.maximum(rel, -5.0), cmap="viridis", vmin=-5.0, vmax=0.0)
    ax.set_title(f"sigma={sigma:g}", fontsize=9)
    ax.set_xticks(range(len(names)), names, rotation=45, fontsize=7, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=7)
    for k in range(len(names)):
      for j in range(len(names)):
        ax.text(j, k, f"{table[s, k, j]:.1f}", ha="center", va="center", fontsize=6,
                color="black" if rel[k, j] > -2.5 else "white")
  for s in range(n, rows * cols):
    axes[s // cols][s % cols].axis("off")
  fig.suptitle("log-likelihood per sample (rows: priors, columns: data); colour: row score - row max")
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)


def tonal_stats(x: np.ndarray, rate: int) -> dict:
  """How tonal waveforms x [num, time] are (a check of prior samples, tools/prior_samples.py): medians over
  the waveforms of the peak share (fraction of spectral energy within +-3 bins of the strongest peak of a Hann
  windowed spectrum: ~1 for a pure tone, ~0 for noise), the peak frequency (Hz) and the peak |x|."""
  x = x - x.mean(-1, keepdims=True)
  spec = np.abs(np.fft.rfft(x * np.hanning(x.shape[-1]), axis=-1)) ** 2
  freqs = np.fft.rfftfreq(x.shape[-1], 1.0 / rate)
  top = spec.argmax(-1)
  share = [spec[i, max(0, j - 3):j + 4].sum() / max(spec[i].sum(), 1e-20) for i, j in enumerate(top)]
  return {"peak_share": float(np.median(share)), "peak_hz": float(np.median(freqs[top])),
          "peak_abs": float(np.median(np.abs(x).max(-1)))}
