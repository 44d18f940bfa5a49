"""Glow / FloWaveNet flow prior for 1-D audio, conditioned on the noise level sigma.

Architecture (forward = normalising direction, x -> z), x: [batch, T] -> [batch, T, 1]:

    pre-squeeze by 2^squeeze_first                    [B, T / 2^s, 2^s]      (optional: shorter time, cheaper on CPU)
    block b = 0 .. num_blocks - 1:
      Squeeze(2)                                      [B, T_b, C_b]          T_b halves, C_b doubles
      flows_per_block x (ActNorm -> InvertibleConv1x1 (LU) -> AffineCoupling(CouplingWaveNet | sigma))
      every `split_every` blocks (not after the last): factor out the second half of the channels
        z_f = [h_a, h_b][..., C/2:] goes to the base distribution; h_a continues.
    the final h joins the factored-out parts.

Base distribution: a learned, zero-initialised conditional Gaussian for every factored-out part (Glow's split
prior), z_f ~ N(mu(h_a, sigma), diag(std(h_a, sigma)^2)), and N(0, I) for the final h. The conditional Gaussian is
written as one more affine coupling whose conditioner is the kept half (eps_f = z_f * exp(log_s) + shift with
log_s = -log std, shift = -mu / std, `SplitPriorNet`), so the WHOLE model is a single bijection x [B, T] -> eps [B, T]
onto a standard Normal:

    log p_sigma(x) = sum_i log N(eps_i; 0, 1) + log|det d eps / dx|          ([batch], nats, summed over T)

where the log-det is the SUM of every ActNorm, 1x1 convolution, coupling and split-prior term (the thesis left the
log-det out of its tables; it is included here). `encode` returns (eps, log_det); `decode` is the exact inverse,
used by `sample`. With learned_split_prior=False the factored parts are N(0, I) directly.

The model is a Keras 3 `Prior` that owns every weight (Keras 3 layers); the TFP bijectors are rebuilt from the
current weight values on each call, so model.trainable_variables holds every parameter and gradients reach them.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from vsep_tf.bijectors.actnorm import ActNormLayer
from vsep_tf.bijectors.affine_coupling import AffineCoupling
from vsep_tf.bijectors.coupling_net import CouplingWaveNet, SplitPriorNet
from vsep_tf.bijectors.invertible_conv import InvertibleConv1x1Layer
from vsep_tf.bijectors.squeeze import Squeeze
from vsep_tf.bijectors.walk import forward_and_log_det
from vsep_tf.layers.tracking import get_layer_list, set_layer_list
from vsep_tf.layers.wavenet import NoiseLevelEmbedding
from vsep_tf.priors.base import Prior

tfb = tfp.bijectors

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


@keras.saving.register_keras_serializable(package="vsep_tf")
class FlowPrior(Prior):
  """Multi-scale Glow / FloWaveNet density p_sigma(x) over waveforms x [batch, time]; see the module docstring.

  Args:
    num_blocks: squeeze + flows blocks; the time length must be divisible by 2^(squeeze_first + num_blocks).
    flows_per_block: K steps (ActNorm, 1x1 conv, coupling) per block.
    width, num_layers, kernel_size, dilation_cycle: the coupling WaveNets, dilations 2^(i mod dilation_cycle)
      (dilation_cycle=0: no cycle, 1, 2, ..., 2^(num_layers - 1); else it must divide num_layers).
    split_every: factor out half of the channels after every `split_every` blocks (never after the last).
    squeeze_first: extra squeezes (factor 2 each) before the first block; 0 = FloWaveNet's layout. Each one halves
      the time resolution every WaveNet runs at (about half the compute) and doubles the samples one WaveNet step
      spans (the receptive field in samples doubles).
    embed_dim: size of the noise-level embedding added in every WaveNet layer.
    log_scale_clamp: soft bound on each coupling's |log scale| (see `AffineCoupling`).
    learned_split_prior: Glow's learned conditional Gaussian for factored-out parts (else N(0, I)).
    sigma_floor: the embedding sees log(sigma + sigma_floor) (sigma = 0 is allowed).
    actnorm_min_std: floor on the std used by the data-dependent ActNorm init.
    seed: seeds the random orthogonal initialisation of the 1x1 convolutions.
  """

  def __init__(self, num_blocks=4, flows_per_block=4, width=32, num_layers=6, kernel_size=3, split_every=2,
               squeeze_first=2, dilation_cycle=0, embed_dim=32, log_scale_clamp=2.0, learned_split_prior=True,
               sigma_floor=1e-4, actnorm_min_std=1e-3, seed=0, **kwargs):
    super().__init__(**kwargs)
    if num_blocks < 1 or flows_per_block < 1 or split_every < 1 or squeeze_first < 0:
      raise ValueError("FlowPrior needs num_blocks, flows_per_block, split_every >= 1 and squeeze_first >= 0.")
    self._config = dict(num_blocks=int(num_blocks), flows_per_block=int(flows_per_block), width=int(width),
                        num_layers=int(num_layers), kernel_size=int(kernel_size), split_every=int(split_every),
                        squeeze_first=int(squeeze_first),
                        dilation_cycle=int(dilation_cycle or 0),
                        embed_dim=int(embed_dim), log_scale_clamp=float(log_scale_clamp),
                        learned_split_prior=bool(learned_split_prior), sigma_floor=float(sigma_floor),
                        actnorm_min_std=float(actnorm_min_std), seed=int(seed))
    cfg = self._config
    self.num_blocks = cfg["num_blocks"]
    self.flows_per_block = cfg["flows_per_block"]
    self.squeeze_first = cfg["squeeze_first"]
    self.time_multiple = 2 ** (self.squeeze_first + self.num_blocks)

    # Static plan: channels seen by each block's flows, and where the splits are.
    self._plan = []
    c = 2 ** self.squeeze_first
    for b in range(self.num_blocks):
      c *= 2
      split = (b + 1) % cfg["split_every"] == 0 and b < self.num_blocks - 1
      keep = c - c // 2 if split else c
      self._plan.append(dict(channels=c, split=split, keep=keep))
      c = keep
    self.final_channels = c

    # f = [c] only (no Fourier features): an MLP on the normalised log(sigma + sigma_floor).
    self.embedding = NoiseLevelEmbedding(cfg["embed_dim"], num_frequencies=0, sigma_floor=cfg["sigma_floor"],
                                         name="sigma_embedding")
    self.embedding.build((None,))
    actnorms, convs, coupling_nets, split_nets = [], [], [], []
    for b, p in enumerate(self._plan):
      c = p["channels"]
      for f in range(self.flows_per_block):
        actnorms.append(ActNormLayer(c, min_std=cfg["actnorm_min_std"], name=f"b{b}_f{f}_actnorm"))
        convs.append(InvertibleConv1x1Layer(c, seed=cfg["seed"] * 100003 + b * 1009 + f,
                                            name=f"b{b}_f{f}_conv1x1"))
        coupling_nets.append(CouplingWaveNet(
            c // 2, c - c // 2, width=cfg["width"], num_layers=cfg["num_layers"], kernel_size=cfg["kernel_size"],
            dilation_cycle=cfg["dilation_cycle"], cond_dim=cfg["embed_dim"], name=f"b{b}_f{f}_wavenet"))
      if p["split"] and cfg["learned_split_prior"]:
        split_nets.append(SplitPriorNet(p["keep"], c - p["keep"], kernel_size=cfg["kernel_size"],
                                        cond_dim=cfg["embed_dim"], name=f"b{b}_split_prior"))
    # Individually tracked attributes, not list attributes: tf.train.Checkpoint must see every weight
    # (see vsep_tf.layers.tracking).
    for name, layers in (("actnorm", actnorms), ("conv", convs), ("coupling_net", coupling_nets),
                         ("split_net", split_nets)):
      set_layer_list(self, name, layers)
    self.initialized = self.add_weight(shape=(), initializer="zeros", trainable=False, name="actnorm_initialized")
    self.built = True

  # ---------------------------------------------------------------------------------------------------------------
  # Structure

  actnorms = property(lambda self: get_layer_list(self, "actnorm"))
  convs = property(lambda self: get_layer_list(self, "conv"))
  coupling_nets = property(lambda self: get_layer_list(self, "coupling_net"))
  split_nets = property(lambda self: get_layer_list(self, "split_net"))

  def _block_steps(self, b):
    """Block b in application order: a list of (kind, owning layer or None, bijector maker)."""
    p = self._plan[b]
    steps = []
    if b == 0 and self.squeeze_first:
      steps.append(("squeeze", None, lambda: Squeeze(2 ** self.squeeze_first, name="pre_squeeze")))
    steps.append(("squeeze", None, lambda: Squeeze(2, name=f"b{b}_squeeze")))
    clamp = self._config["log_scale_clamp"]
    actnorms, convs, nets = self.actnorms, self.convs, self.coupling_nets
    for f in range(self.flows_per_block):
      i = b * self.flows_per_block + f
      act, conv, net = actnorms[i], convs[i], nets[i]
      steps.append(("actnorm", act, lambda act=act, f=f: act.bijector(name=f"b{b}_f{f}_actnorm")))
      steps.append(("conv", conv, lambda conv=conv, f=f: conv.bijector(name=f"b{b}_f{f}_conv1x1")))
      steps.append(("coupling", net, lambda net=net, f=f: AffineCoupling(net, log_scale_clamp=clamp,
                                                                         name=f"b{b}_f{f}_coupling")))
    if p["split"] and self._config["learned_split_prior"]:
      net = self.split_nets[sum(q["split"] for q in self._plan[:b])]
      steps.append(("coupling", net, lambda net=net: AffineCoupling(net, num_masked=p["keep"], log_scale_clamp=clamp,
                                                                    name=f"b{b}_split_prior")))
    return steps

  def block_bijector(self, b, conditioning):
    """Block b as a tfb.Chain on the weights' current values, and the conditional kwargs that carry the noise-level
    embedding e [batch, embed_dim] to its couplings: `chain.forward(h, **kwargs)`, `chain.inverse(z, **kwargs)`.

    Maps [batch, T_in, C_in] -> [batch, T_in / 2 (/ 2^squeeze_first for b = 0), C_b] (before the split)."""
    steps = self._block_steps(b)
    bijectors = [make() for _, _, make in steps]
    # Key by the bijectors' ACTUAL names: inside one tf.function graph TFP uniquifies repeated names.
    kwargs = {bij.name: {"conditioning": conditioning}
              for (kind, _, _), bij in zip(steps, bijectors) if kind == "coupling"}
    return tfb.Chain(list(reversed(bijectors)), name=f"block_{b}"), kwargs

  def latent_layout(self, length):
    """[(T_i, C_i)] of the parts of eps in `encode`'s packing order (factored-out parts by block, then the final
    h); sum T_i * C_i == length. Works with a Python int or a scalar tensor."""
    layout = []
    t = length // (2 ** self.squeeze_first)
    for p in self._plan:
      t = t // 2
      if p["split"]:
        layout.append((t, p["channels"] - p["keep"]))
    layout.append((t, self.final_channels))
    return layout

  # ---------------------------------------------------------------------------------------------------------------
  # The bijection x -> eps

  def _check_length(self, x):
    t = x.shape[1]
    if t is not None:
      if t % self.time_multiple:
        raise ValueError(
            f"FlowPrior: time length {t} is not divisible by 2^(squeeze_first + num_blocks) = {self.time_multiple} "
            f"(squeeze_first={self.squeeze_first}, num_blocks={self.num_blocks}); crop or pad the input.")
      return []
    return [tf.debugging.assert_equal(
        tf.shape(x)[1] % self.time_multiple, 0,
        message=f"FlowPrior: time length must be divisible by 2^(squeeze_first + num_blocks) = {self.time_multiple}")]

  def _prepare(self, x, sigma, name):
    x = tf.convert_to_tensor(x, dtype=tf.float32)
    if x.shape.rank != 2:
      raise ValueError(f"FlowPrior.{name}: expected [batch, time], got shape {x.shape}.")
    batch = tf.shape(x)[0]
    sigma = tf.broadcast_to(tf.reshape(tf.cast(sigma, tf.float32), [-1]), [batch])
    return x, sigma

  def encode(self, x, sigma, initialize=False):
    """x [batch, T] -> (eps [batch, T], log_det [batch]) with eps ~ N(0, I) under the model.

    initialize=True (eager only) sets every ActNorm from the statistics of its input on the way (see
    `initialize`)."""
    x, sigma = self._prepare(x, sigma, "encode")
    with tf.control_dependencies(self._check_length(x)):
      h = tf.identity(x)[:, :, None]
    e = self.embedding(sigma)
    log_det = tf.zeros(tf.shape(x)[:1], tf.float32)
    parts = []
    for b, p in enumerate(self._plan):
      if initialize:
        for kind, layer, make in self._block_steps(b):
          if kind == "actnorm":
            layer.initialize(h)
          bij = make()
          kw = {"conditioning": e} if kind == "coupling" else {}
          y = bij.forward(h, **kw)
          log_det += bij.forward_log_det_jacobian(h, event_ndims=2, **kw)
          h = y
      else:
        chain, kwargs = self.block_bijector(b, e)
        h, ld = forward_and_log_det(chain, h, **kwargs)
        log_det += ld
      if p["split"]:
        parts.append(h[..., p["keep"]:])
        h = h[..., :p["keep"]]
    parts.append(h)
    batch = tf.shape(x)[0]
    eps = tf.concat([tf.reshape(q, [batch, -1]) for q in parts], axis=1)
    return eps, log_det

  def decode(self, eps, sigma):
    """Inverse of `encode`: eps [batch, T] -> x [batch, T]."""
    eps, sigma = self._prepare(eps, sigma, "decode")
    with tf.control_dependencies(self._check_length(eps)):
      eps = tf.identity(eps)
    batch = tf.shape(eps)[0]
    length = eps.shape[1] if eps.shape[1] is not None else tf.shape(eps)[1]
    layout = self.latent_layout(length)
    flat = tf.split(eps, [t * c for t, c in layout], axis=1)
    parts = [tf.reshape(q, [batch, t, c]) for q, (t, c) in zip(flat, layout)]
    h = parts.pop()
    e = self.embedding(sigma)
    for b in reversed(range(self.num_blocks)):
      if self._plan[b]["split"]:
        h = tf.concat([h, parts.pop()], axis=-1)
      chain, kwargs = self.block_bijector(b, e)
      h = chain.inverse(h, **kwargs)
    return h[:, :, 0]

  # ---------------------------------------------------------------------------------------------------------------
  # Prior API

  def log_prob(self, x, sigma, training=False):
    """log p_sigma(x) in nats summed over time: [batch]. x: [batch, T] (T divisible by `time_multiple`),
    sigma: [batch] or a scalar (0 = noiseless)."""
    eps, log_det = self.encode(x, sigma)
    n = tf.cast(tf.shape(eps)[1], tf.float32)
    return -0.5 * tf.reduce_sum(tf.square(eps), axis=1) - n * _HALF_LOG_2PI + log_det

  def sample(self, num, length, sigma, temperature=1.0, seed=None):
    """Draws [num, length] waveforms from p_sigma by the inverse flow; eps ~ N(0, temperature^2 I) (temperature < 1
    trades diversity for typicality, as in Glow). sigma: scalar or [num]."""
    if length % self.time_multiple:
      raise ValueError(f"FlowPrior.sample: length {length} is not divisible by {self.time_multiple}.")
    eps = temperature * tf.random.normal([num, length], seed=seed)
    return self.decode(eps, sigma)

  @property
  def is_initialized(self):
    return bool(self.initialized.numpy() > 0.5)

  def initialize(self, x, sigma, force=False):
    """Data-dependent ActNorm init (Glow) on a first batch x [batch, T], sigma [batch]: each ActNorm, in flow order,
    is set so that ITS input batch comes out with zero mean and unit variance per channel. Run eagerly, once,
    before training. Skipped (returns False) when already done, e.g. after a checkpoint restore, unless force."""
    if self.is_initialized and not force:
      return False
    self.encode(x, sigma, initialize=True)
    self.initialized.assign(1.0)
    return True

  def get_config(self):
    return {"name": self.name, "trainable": self.trainable, **self._config}


def build_flow_prior(num_blocks=4, flows_per_block=4, width=32, num_layers=6, kernel_size=3, split_every=2,
                     squeeze_first=2, dilation_cycle=0, embed_dim=32, log_scale_clamp=2.0,
                     learned_split_prior=True, sigma_floor=1e-4, actnorm_min_std=1e-3, seed=0,
                     name="flow_prior") -> FlowPrior:
  """The flow prior with CPU-sized defaults (see `FlowPrior` for every argument).

  The thesis' toy model is num_blocks=4, flows_per_block=6, width=32, num_layers=10 (dilations 1..512),
  squeeze_first=0. Inputs need a time length divisible by 2^(squeeze_first + num_blocks) (64 by default)."""
  return FlowPrior(num_blocks=num_blocks, flows_per_block=flows_per_block, width=width, num_layers=num_layers,
                   kernel_size=kernel_size, split_every=split_every, squeeze_first=squeeze_first,
                   dilation_cycle=dilation_cycle, embed_dim=embed_dim, log_scale_clamp=log_scale_clamp,
                   learned_split_prior=learned_split_prior, sigma_floor=sigma_floor,
                   actnorm_min_std=actnorm_min_std, seed=seed, name=name)
