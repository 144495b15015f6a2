"""B-cos layers, norm layers, the logit layer and the input encoding (NHWC).

Every layer takes `explain: bool` as a keyword argument of its call: in
explanation mode its dynamic factors are detached, so gradients give the
exact dynamic linear map W(x).
"""

from bcos_jax.nn.bcos_conv import BcosConv, v1_default_scale
from bcos_jax.nn.bcos_dense import BcosDense
from bcos_jax.nn.encoding import ENCODED_CHANNELS, add_inverse, check_encoded
from bcos_jax.nn.logit import LogitLayer
from bcos_jax.nn.norms import NORM_LAYERS, BatchNorm, GroupNorm, LayerNorm, make_norm

__all__ = [
    "BcosConv", "BcosDense", "LogitLayer", "BatchNorm", "GroupNorm", "LayerNorm", "NORM_LAYERS",
    "make_norm", "add_inverse", "check_encoded", "ENCODED_CHANNELS", "v1_default_scale",
]
