"""B-cos layers, norm layers, shared blocks, the logit layer and the input encodings (NHWC).

Every layer takes `explain: bool` as a keyword argument of its call: in
explanation mode its dynamic factors are detached, so gradients give the
exact dynamic linear map W(x).
"""

from bcos_jax.nn.bcos_conv import BcosConv, v1_scale
from bcos_jax.nn.bcos_dense import BcosDense
from bcos_jax.nn.blocks import ConvNorm, ConvOptions, apply_norm, optional_norm
from bcos_jax.nn.encoding import (
    ENCODED_CHANNELS,
    IMAGENET_ADD_INVERSE_MEAN,
    IMAGENET_ADD_INVERSE_STD,
    INPUT_ENCODINGS,
    InputEncoding,
    InputNormalisation,
    add_inverse,
    check_encoded,
    check_rgb,
    get_encoding,
    normalize_rgb,
)
from bcos_jax.nn.logit import LogitLayer, uniform_prior_bias
from bcos_jax.nn.norms import NORM_LAYERS, BatchNorm, GroupNorm, LayerNorm, make_norm
from bcos_jax.nn.pooling import avg_pool, box_smooth, max_pool
from bcos_jax.nn.standard_layers import ACTIVATIONS, StandardConv, StandardDense, activation
from bcos_jax.nn.stochastic_depth import StochasticDepth

__all__ = [
    "ACTIVATIONS", "BatchNorm", "BcosConv", "BcosDense", "ConvNorm", "ConvOptions",
    "ENCODED_CHANNELS", "GroupNorm", "IMAGENET_ADD_INVERSE_MEAN", "IMAGENET_ADD_INVERSE_STD",
    "INPUT_ENCODINGS", "InputEncoding", "InputNormalisation", "LayerNorm", "LogitLayer",
    "NORM_LAYERS", "StandardConv", "StandardDense", "StochasticDepth", "activation", "add_inverse",
    "apply_norm", "avg_pool", "box_smooth", "check_encoded", "check_rgb", "get_encoding",
    "make_norm", "max_pool", "normalize_rgb", "optional_norm", "uniform_prior_bias", "v1_scale",
]
