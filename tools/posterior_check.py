r"""Does the posterior under a set of score priors hold the right answer, and can a sampler find it?

  python -m tools.posterior_check --prior_dir=pretrained/toy_score --init_dir=runs/toy_score_variational \
      --output_json=docs/results/toy_posterior_check.json

Held-out crops (toy: --toy_seed, default 1234, never trained on; stems: the test split) are separated by an
annealed denoise-and-project sampler under the priors of --prior_dir (score priors, vsep_tf.priors.score):

    for sigma_i = s0 > ... > sigma_min (geometric, --levels):
      d   = Pi_m( D_k(x_k, sigma_i) for every k )     each prior denoises its source; Pi_m: mixture consistency
      x   = d + sigma_{i+1} e,  e ~ N(0, I) projected to sum_k e_k = 0 (the noise keeps the mix constraint)

from three starts:
  oracle: the TRUE sources + s0 noise (for each --oracle_sigmas s0). High SI-SDR here means the truth is a
          stable point of the posterior: the priors know the sources; low means the priors themselves fail.
  blind:  each source = its share of the mix + --blind_sigma noise (what a Langevin / diffusion separator does).
  init:   the estimates of the separator in --init_dir + s0 noise (refining an amortised separator).
The gap between the oracle and the blind start is the search problem the thesis met ("too peaked to optimise").

With --restarts=R every blind / init start runs R chains, and each item keeps the chain of lowest energy
E(x) = sum_k E_k(x_k), E_k the diffusion-ELBO estimate of -log p_k (ScorePrior.denoising_energy: no truth
used) -> `<start>_select<R>`; `<start>_best<R>` keeps the chain of best mean SI-SDR (uses the truth: the most
any selection among these chains can reach). `energy` reports, per start, how often the truth has a lower
energy than every chain: when it does, the priors prefer the truth and search is the problem; when it does not,
the priors prefer wrong answers and no search under them can find the truth.
--permutations: the energy of the true sources against every other assignment of the same true sources to the
classes (N! - 1 of them: is the whole-source assignment decided by the priors?) -> `energy.permutations`: the
share of items whose truth ranks first, the median gap to the best other assignment, and that runner-up.
This is a diagnostic (the truth is used for the oracle start and for scoring), not a separator.
"""
from __future__ import annotations

import itertools
import json
import os
import sys

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("prior_dir", None, "A --job=priors model directory with --prior=score priors.", required=True)
flags.DEFINE_string("init_dir", None, "Optional separator model directory for the 'init' start.")
flags.DEFINE_integer("toy_seed", 1234, "Toy data seed of the held-out crops.")
flags.DEFINE_integer("num_examples", 8, "Held-out crops.")
flags.DEFINE_integer("length", 16384, "Samples per crop.")
flags.DEFINE_integer("levels", 40, "Noise levels of the sampler.")
flags.DEFINE_float("sigma_min", 0.005, "Last noise level.")
flags.DEFINE_list("oracle_sigmas", ["0.05", "0.2", "0.5"], "Start noise levels of the oracle start.")
flags.DEFINE_float("blind_sigma", 1.0, "Start noise level of the blind start.")
flags.DEFINE_float("init_sigma", 0.3, "Start noise level of the init start.")
flags.DEFINE_integer("seed", 0, "Seed of the crops and the sampler noise.")
flags.DEFINE_integer("restarts", 1, "Chains per blind / init start (sampler seeds seed .. seed + R - 1); with R > 1 "
                     "each item's chains are also ranked by the priors' energy (module docstring).")
flags.DEFINE_bool("permutations", False, "Rank the truth's energy against every permutation of the true "
                  "sources among the classes.")
flags.DEFINE_list("energy_sigmas", ["0.01", "1.0", "12"], "Energy grid: first, last noise level, number of levels.")
flags.DEFINE_string("output_json", None, "Where the results go (JSON).")


def anneal(priors, mix, x0, s0, levels, sigma_min, mix_fn, seed):
  """The denoise-and-project sampler of the module docstring from x0 + s0 e: [batch, N, T] -> [batch, N, T]."""
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf.separators.base import consistency_projection  # pylint: disable=import-outside-toplevel

  @tf.function(reduce_retracing=True)
  def denoise(x, sigma):
    sig = tf.fill(tf.shape(x)[:1], sigma)
    return tf.stack([p.denoise(x[:, k], sig) for k, p in enumerate(priors)], axis=1)

  def zero_sum_noise(i):
    e = tf.random.stateless_normal(tf.shape(x0), [seed, i])
    return e - tf.reduce_mean(e, axis=1, keepdims=True)

  sigmas = np.geomspace(s0, sigma_min, levels).astype(np.float32)
  x = x0 + s0 * zero_sum_noise(0)
  for i, sigma in enumerate(sigmas):
    d = consistency_projection(denoise(x, tf.constant(sigma)), mix, mix_fn)
    x = d + (sigmas[i + 1] * zero_sum_noise(i + 1) if i + 1 < len(sigmas) else 0.0)
  return x


def main(argv):
  del argv
  import numpy as np  # pylint: disable=import-outside-toplevel
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  from vsep_tf import signal as signal_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf.data import mixing  # pylint: disable=import-outside-toplevel
  from vsep_tf import config as config_lib  # pylint: disable=import-outside-toplevel
  from vsep_tf import registry  # pylint: disable=import-outside-toplevel
  from vsep_tf.model_dir import load_separator, restore_priors  # pylint: disable=import-outside-toplevel
  from tools.common import model_data_config  # pylint: disable=import-outside-toplevel

  cfg = model_data_config(FLAGS.prior_dir)
  if cfg.prior != "score":
    raise app.UsageError(f"{FLAGS.prior_dir} holds --prior={cfg.prior} priors; this check needs score priors")
  if cfg.dataset == "toy":
    cfg = cfg.replace(toy_seed=FLAGS.toy_seed)
  data = registry.dataset_from_config(cfg)
  priors, _ = restore_priors(FLAGS.prior_dir)
  priors = [priors[name] for name in data.source_names]
  batch = next(iter(data.mixtures("test", length=FLAGS.length, batch_size=FLAGS.num_examples, seed=FLAGS.seed)))
  mix, sources = batch["mix"], batch["sources"]
  n = len(data.source_names)

  def score(estimates):
    sdr = signal_lib.si_sdr(sources, estimates).numpy()
    return {name: round(float(np.median(sdr[:, k])), 2) for k, name in enumerate(data.source_names)}

  def run(x0, s0):
    return score(anneal(priors, mix, x0, float(s0), FLAGS.levels, FLAGS.sigma_min, data.mix, FLAGS.seed))

  lo, hi, num = float(FLAGS.energy_sigmas[0]), float(FLAGS.energy_sigmas[1]), int(FLAGS.energy_sigmas[2])
  energy_grid = np.geomspace(lo, hi, num)

  def energy(x):  # [batch, N, T] -> [batch]
    return sum(p.denoising_energy(x[:, k], energy_grid, FLAGS.seed).numpy() for k, p in enumerate(priors))

  energies = {"truth": energy(sources)} if FLAGS.restarts > 1 or FLAGS.init_dir else {}
  if FLAGS.permutations:
    perms = list(itertools.permutations(range(n)))  # perms[0] is the identity: the truth
    src = sources.numpy()
    first, gaps, runners = [], [], []
    for item in src:
      e = energy(np.stack([item[list(p)] for p in perms]))  # each assignment as one batch row
      other = 1 + int(np.argmin(e[1:]))
      first.append(bool(e[0] < e[other]))
      gaps.append(float(e[other] - e[0]))
      runners.append("/".join(data.source_names[j] for j in perms[other]))
    energies["permutations"] = {"truth_first": float(np.mean(first)), "median_gap_to_next": float(np.median(gaps)),
                                "runner_up": max(set(runners), key=runners.count)}

  def run_restarts(name, x0, s0):
    """Chain 0 under `name` (as with one restart); with R > 1 also the energy-selected and best-of-R chains."""
    chains = [anneal(priors, mix, x0, float(s0), FLAGS.levels, FLAGS.sigma_min, data.mix, FLAGS.seed + r)
              for r in range(FLAGS.restarts)]
    results[name] = score(chains[0])
    if FLAGS.restarts == 1:
      return
    stack = np.stack([c.numpy() for c in chains])  # [R, batch, N, T]
    chain_energy = np.stack([energy(c) for c in chains])  # [R, batch]
    chain_sdr = np.stack([signal_lib.si_sdr(sources, c).numpy().mean(axis=1) for c in chains])  # [R, batch]
    items = np.arange(stack.shape[1])
    results[f"{name}_select{FLAGS.restarts}"] = score(stack[np.argmin(chain_energy, 0), items])
    results[f"{name}_best{FLAGS.restarts}"] = score(stack[np.argmax(chain_sdr, 0), items])
    energies[name] = {"truth_below_every_chain": float(np.mean(energies["truth"] < chain_energy.min(0))),
                      "median_selected_minus_truth": float(np.median(chain_energy.min(0) - energies["truth"]))}

  results = {"mixture": score(tf.repeat(mix[:, None], n, axis=1))}
  run_restarts("blind", mixing.equal_split(mix, data.mix, n), FLAGS.blind_sigma)
  for s0 in FLAGS.oracle_sigmas:
    results[f"oracle_{s0}"] = run(sources, s0)
  if FLAGS.init_dir:
    init = load_separator(FLAGS.init_dir).separate(mix)
    results["init_separator"] = score(init)
    init_energy = energy(init)
    energies["init_separator"] = {"truth_below": float(np.mean(energies["truth"] < init_energy)),
                                  "median_minus_truth": float(np.median(init_energy - energies["truth"]))}
    run_restarts(f"init_{FLAGS.init_sigma:g}", init, FLAGS.init_sigma)
  for start, row in results.items():
    print(f"{start:>16}: " + " ".join(f"{k}={v:6.2f}" for k, v in row.items()))
  for start, row in energies.items():
    if start != "truth":
      print(f"energy {start}: {row}")
  if FLAGS.output_json:
    out = {"prior_dir": FLAGS.prior_dir, "init_dir": FLAGS.init_dir, "dataset": cfg.dataset,
           "num_examples": FLAGS.num_examples, "length": FLAGS.length, "levels": FLAGS.levels,
           "restarts": FLAGS.restarts, "median_si_sdr": results,
           "energy": {k: v for k, v in energies.items() if k != "truth"}}
    config_lib.atomic_write_text(FLAGS.output_json, json.dumps(out, indent=1) + "\n")
  return 0


if __name__ == "__main__":
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.exit(app.run(main))
