"""What the conventional torchvision networks and their B-cosified versions share.

The ResNet and DenseNet files build both from their own blocks; these are the
builder options that make a family conventional (torchvision's layers) or
B-cosified (Arya et al., NeurIPS 2024), and the key prefix of the official
B-cosified checkpoints.
"""

from bcos_jax.nn import IMAGENET_ADD_INVERSE_MEAN, IMAGENET_ADD_INVERSE_STD

# torchvision's layers: RGB normalised outside, ordinary convs, centered
# BatchNorm with bias, ReLU, max-pooling in the stem, a linear head with bias
# after pooling, no logit bias (cross-entropy networks).
STANDARD_OPTIONS = dict(bcos=False, activation="relu", norm="BatchNorm2d", stem_pool="max",
                        classifier_before_pool=False, head_bias=True, logit_bias=0.0)
# B-cosified: B = 2 convs over the raw pretrained kernels, ReLU kept, the
# 6-channel input normalised inside with the ImageNet statistics; the rest
# (uncentered BatchNorm without bias, average pooling in the stem, the head
# before pooling, logit bias -log(C - 1)) are the B-cos families' defaults.
BCOSIFIED_OPTIONS = dict(activation="relu", unit_norm_kernels=False,
                         input_mean=IMAGENET_ADD_INVERSE_MEAN, input_std=IMAGENET_ADD_INVERSE_STD)
# The official BcosifyNetwork keeps the network as `model`.
BCOSIFIED_TORCH_PREFIX = "model."
