"""TFP bijectors for the Glow / FloWaveNet flow prior, on [batch, time, channels] (event ndims 2).

`forward` is the normalising direction (data x -> latent z) throughout. The bijectors hold no variables: Keras 3
layers own the weights (`ActNormLayer`, `InvertibleConv1x1Layer`, the coupling networks) and bijectors are built from
their current values on every call, so a Keras model's trainable_variables sees every parameter.

  squeeze          Squeeze (time -> channels)
  actnorm          ActNorm + ActNormLayer (data-dependent init) + actnorm_init_values
  invertible_conv  InvertibleConv1x1 (LU) + InvertibleConv1x1Layer + lu_decompose / random_orthogonal_lu
  affine_coupling  AffineCoupling (conditional kwargs `conditioning`, soft-clamped exp scale)
  coupling_net     CouplingWaveNet (over vsep_tf.layers.wavenet.WaveNet), SplitPriorNet (Keras 3 layers)
  walk             forward_and_log_det / inverse_and_log_det: one pass over a tfb.Chain
"""
from vsep_tf.bijectors.actnorm import ActNorm, ActNormLayer, actnorm_init_values
from vsep_tf.bijectors.affine_coupling import AffineCoupling
from vsep_tf.bijectors.coupling_net import CouplingWaveNet, SplitPriorNet
from vsep_tf.bijectors.invertible_conv import (InvertibleConv1x1, InvertibleConv1x1Layer, lu_decompose,
                                               random_orthogonal_lu)
from vsep_tf.bijectors.squeeze import Squeeze
from vsep_tf.bijectors.walk import forward_and_log_det, inverse_and_log_det

__all__ = [
    "ActNorm", "ActNormLayer", "actnorm_init_values", "AffineCoupling", "CouplingWaveNet", "SplitPriorNet",
    "InvertibleConv1x1", "InvertibleConv1x1Layer", "lu_decompose", "random_orthogonal_lu",
    "Squeeze", "forward_and_log_det", "inverse_and_log_det",
]
