"""Attribution methods: the model-inherent B-cos explanation and post-hoc baselines.

Every method has one signature,

    method(model, x6, targets, **options) -> attributions

with `x6` the model's input (`models.input_transform(model)`: (N, H, W, 6)
encoded images for B-cos models, normalised RGB for the conventional
baselines) and `targets` (N,) one class per image or (N, T) several; the
result is (N, H, W, C) or (N, T, H, W, C), where C is the input's channels
for the input-gradient methods (one value per input channel, summed by the
localisation metric) and 1 for the others. All use the model's evaluation
view (`models.eval_mode`). `METHODS` maps the names used by the localisation
command to them (`PAPER_LABELS` the official explainers' names for them, `METHOD_SETS`
the papers' sets); `methods_by_name` binds their options.

The settings follow the B-cos papers' comparison (v1 Sec. 4, C.2; the v2
explainers): Integrated Gradients with 50 steps from a zero baseline
(Gauss-Legendre points, captum's default), Grad-CAM on the last feature map with
nearest upsampling, Occlusion with the official mask geometry and presets, RISE
with the official masks (500, s=8, p=0.1, NumPy's legacy seed 42) weighted by
the class probability, and LIME as `lime`'s image explainer runs it (500
samples on quickshift superpixels: kernel 4, max_dist 200, ratio 0.2), keeping
the 5 superpixels with the largest positive weights. Grad, Input×Gradient,
Integrated Gradients, Grad-CAM, every Occlusion preset and RISE equal the
official explainers' outputs on the v2 ResNet-18, and LIME chooses the same
superpixels (`tests/golden/attribution_resnet18.npz`); on these ReLU-free
networks captum's DeepLIFT and Guided Backprop equal Input×Gradient and the
gradient, as the golden file shows.
"""

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bcos_jax import models
from bcos_jax.errors import UserError
from bcos_jax.explain import probe
from bcos_jax.explain.explanation import check_targets, explain
from bcos_jax.nn import backward_rules

Method = Callable[..., jax.Array]


def _prepare(model: nnx.Module, x6: jax.Array, targets) -> tuple[jax.Array, bool]:
  """Checks the inputs; returns targets as (N, T) and whether T was absent."""
  models.check_input(model, x6)
  targets = check_targets(targets, x6.shape[0])
  squeeze = targets.ndim == 1
  return (targets[:, None] if squeeze else targets), squeeze


def _finish(attributions: jax.Array, squeeze: bool) -> jax.Array:
  return attributions[:, 0] if squeeze else attributions


def _split(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State]:
  # The jitted methods merge with `_merge`: evaluation mode is applied while tracing.
  return nnx.split(model)


def _merge(graphdef: nnx.GraphDef, state: nnx.State) -> nnx.Module:
  return models.eval_mode(nnx.merge(graphdef, state))


def _select(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """(N, C), (N, T) -> (N, T)."""
  return jnp.take_along_axis(logits, targets, axis=1)


def _one_hot_cotangents(targets: jax.Array, num_classes: int) -> jax.Array:
  """(N, T) -> (T, N, C): one backward pass per explained class."""
  return jnp.moveaxis(jax.nn.one_hot(targets, num_classes), 1, 0)


# -- Gradient methods.

@functools.partial(jax.jit, static_argnums=(0, 4))
def _gradients(graphdef, state, x6, targets, explain_mode: bool) -> jax.Array:
  """d logit_t / d x6 for every target: (N, T, H, W, 6)."""
  model = _merge(graphdef, state)
  logits, vjp = jax.vjp(lambda x: model(x, explain=explain_mode), x6)
  (grads,) = jax.vmap(vjp)(_one_hot_cotangents(targets, logits.shape[-1]).astype(logits.dtype))
  return jnp.moveaxis(grads, 0, 1)


def bcos(model: nnx.Module, x6: jax.Array, targets) -> jax.Array:
  """The model-inherent explanation: contributions x6 · W_t(x), (N[, T], H, W, 6)."""
  targets, squeeze = _prepare(model, x6, targets)
  weights = explain(model, x6, targets).weights  # (N, T, H, W, 6)
  return _finish(x6[:, None] * weights, squeeze)


def gradient(model: nnx.Module, x6: jax.Array, targets) -> jax.Array:
  """The plain gradient of the target logit (signed, as the v1 comparison uses it)."""
  targets, squeeze = _prepare(model, x6, targets)
  return _finish(_gradients(*_split(model), x6, targets, False), squeeze)


def input_x_gradient(model: nnx.Module, x6: jax.Array, targets) -> jax.Array:
  """Input × gradient."""
  targets, squeeze = _prepare(model, x6, targets)
  return _finish(x6[:, None] * _gradients(*_split(model), x6, targets, False), squeeze)


@functools.partial(jax.jit, static_argnums=0)
def _guided_gradients(graphdef, state, x6, targets) -> jax.Array:
  # Traced with the rule in force, in a jitted function of its own: the plain
  # gradient's compiled functions never see it.
  with backward_rules.use(backward_rules.GUIDED_BACKPROP):
    return _gradients.__wrapped__(graphdef, state, x6, targets, False)


def guided_backprop(model: nnx.Module, x6: jax.Array, targets) -> jax.Array:
  """Guided Backprop (captum's `GuidedBackprop`): the gradient with every ReLU passing back
  only positive gradients where its input was positive. On ReLU-free B-cos networks: the
  gradient."""
  targets, squeeze = _prepare(model, x6, targets)
  return _finish(_guided_gradients(*_split(model), x6, targets), squeeze)


@functools.partial(jax.jit, static_argnums=0)
def _deeplift(graphdef, state, x6, targets) -> jax.Array:
  model = _merge(graphdef, state)
  reference = jnp.zeros_like(x6)

  def paired_logits(x):
    # captum runs inputs and references as one batch, [x; x_ref], and back-propagates
    # the target logits of both halves; the rules read the pairs.
    with backward_rules.use(backward_rules.DEEPLIFT):
      return model(jnp.concatenate([x, reference]))

  logits, vjp = jax.vjp(paired_logits, x6)
  cotangents = _one_hot_cotangents(targets, logits.shape[-1]).astype(logits.dtype)
  (grads,) = jax.vmap(vjp)(jnp.concatenate([cotangents, cotangents], axis=1))
  return (x6 - reference)[:, None] * jnp.moveaxis(grads, 0, 1)


def deeplift(model: nnx.Module, x6: jax.Array, targets) -> jax.Array:
  """DeepLIFT with the rescale rule and a zero reference (captum's `DeepLift`): multipliers
  Δout/Δin through every ReLU and captum's rule through max-pooling
  (`bcos_jax.nn.backward_rules`), times (x - 0). Completeness: sums to f(x) - f(0). On
  ReLU-free B-cos networks: Input×Gradient."""
  targets, squeeze = _prepare(model, x6, targets)
  return _finish(_deeplift(*_split(model), x6, targets), squeeze)


def gauss_legendre_path(steps: int) -> tuple[np.ndarray, np.ndarray]:
  """Points in (0, 1) and weights (summing to 1) of the Gauss-Legendre rule."""
  points, weights = np.polynomial.legendre.leggauss(steps)
  return (points + 1) / 2, weights / 2


@functools.partial(jax.jit, static_argnums=0)
def _integrated(graphdef, state, x6, targets, alphas, weights) -> jax.Array:
  def accumulate(total, alpha_weight):
    alpha, weight = alpha_weight
    return total + weight * _gradients(graphdef, state, alpha * x6, targets, False), None

  zeros = jnp.zeros((x6.shape[0], targets.shape[1], *x6.shape[1:]), x6.dtype)
  # A scan keeps one path point in memory at a time.
  total, _ = jax.lax.scan(accumulate, zeros, (alphas, weights))
  return x6[:, None] * total


def integrated_gradients(model: nnx.Module, x6: jax.Array, targets, steps: int = 50) -> jax.Array:
  """Integrated Gradients from the zero baseline (completeness: sums to f(x) - f(0))."""
  targets, squeeze = _prepare(model, x6, targets)
  alphas, weights = gauss_legendre_path(steps)
  return _finish(_integrated(*_split(model), x6, targets, jnp.asarray(alphas, x6.dtype),
                             jnp.asarray(weights, x6.dtype)), squeeze)


# -- Grad-CAM.

def grad_cam_layer(model: nnx.Module) -> tuple[str, str]:
  """The default Grad-CAM feature map of a model, as its family declares it:
  (submodule path, side)."""
  found = models.info(model)
  if found.family.grad_cam_layer is None:
    raise UserError(f"{found.name} has no default Grad-CAM layer (a model without a final "
                     f"feature map, e.g. a ViT); pass layer='path' (one of "
                     f"{', '.join(probe.module_paths(model))}) and side='input' or 'output'")
  return found.family.grad_cam_layer(model)


@functools.partial(jax.jit, static_argnums=(0, 4, 5))
def _grad_cam(graphdef, state, x6, targets, path, side) -> jax.Array:
  model = _merge(graphdef, state)
  tap = probe.attach(model, path, side)
  model(x6)  # learns the feature map's shape; the compiler drops this pass
  shape = probe.single(tap, path).shape

  def logits_of(shift):
    tap.seen.clear()
    tap.shift[:] = [shift]
    logits = model(x6)
    return logits, probe.single(tap, path)

  logits, vjp, features = jax.vjp(logits_of, jnp.zeros(shape, x6.dtype), has_aux=True)
  (grads,) = jax.vmap(vjp)(_one_hot_cotangents(targets, logits.shape[-1]).astype(logits.dtype))
  if features.ndim == 3:  # a ViT's tokens (N, h·w, D): Grad-CAM on their patch grid
    features, grads = _token_grid(features), jax.vmap(_token_grid)(grads)
  # Grad-CAM: channel weights are the spatially summed gradients (as the
  # official comparison; the mean only rescales), a ReLU of the weighted sum.
  channel_weights = grads.sum(axis=(2, 3), keepdims=True)  # (T, N, 1, 1, C)
  cam = jax.nn.relu(jnp.sum(channel_weights * features[None], axis=-1))  # (T, N, h, w)
  return jnp.moveaxis(nearest_upsample(cam, x6.shape[1:3]), 0, 1)[..., None]


def _token_grid(tokens: jax.Array) -> jax.Array:
  """(N, T, D) tokens of a square patch grid (row-major, no class token) -> (N, s, s, D)."""
  n, count, dim = tokens.shape
  side = int(round(count**0.5))
  if side * side != count:
    raise UserError(f"Grad-CAM on tokens needs a square patch grid, got {count} tokens")
  return tokens.reshape(n, side, side, dim)


def nearest_upsample(maps: jax.Array, size: tuple[int, int]) -> jax.Array:
  """Nearest-neighbour resize of the last two axes, as torch's 'nearest' (floor(i·in/out))."""
  rows = (np.arange(size[0]) * maps.shape[-2]) // size[0]
  cols = (np.arange(size[1]) * maps.shape[-1]) // size[1]
  return maps[..., rows, :][..., cols]


def grad_cam(model: nnx.Module, x6: jax.Array, targets, layer: str | None = None,
             side: str = "output") -> jax.Array:
  """Grad-CAM on a feature map, upsampled to the image: (N[, T], H, W, 1).

  Args:
    layer: the submodule whose input or output is the feature map (N, h, w, C), or
      a ViT's tokens (N, h·w, D), read on their patch grid; None takes the model's
      last feature map (`grad_cam_layer`).
    side: 'input' or 'output' of `layer`.
  """
  targets, squeeze = _prepare(model, x6, targets)
  if layer is None:
    layer, side = grad_cam_layer(model)
  path = probe.parse_path(layer)
  probe.check_path(model, path)
  return _finish(_grad_cam(*_split(model), x6, targets, path, side), squeeze)


# -- Perturbation methods.

def _masked_logits(graphdef, state, x6, masks, batch_size: int) -> jax.Array:
  """Logits of every image under every mask: masks (M, H, W) -> (M, N, C)."""
  model = _merge(graphdef, state)
  return jax.lax.map(lambda mask: model(x6 * mask[None, :, :, None]), masks,
                     batch_size=batch_size)


def occlusion_masks(height: int, width: int, kernel: int, stride: int) -> np.ndarray:
  """(M, H, W) masks of the official Occlusion explainer: 0 where occluded, 1 elsewhere.

  The masks sit at the (H // stride) × (W // stride) grid points (i·s, j·s). An odd
  kernel k zeroes rows and columns [i·s - (k-1)/2, i·s + (k-1)/2) (a (k-1)-wide
  square around the point); an even k zeroes [(i+1)·s - k, i·s + k) (2k - s wide);
  both are clipped at 0, as the official code does.
  """
  if kernel % 2:
    half, offset = (kernel - 1) // 2, 0
  else:
    half, offset = kernel, 1
  masks = []
  for row in range(height // stride):
    for col in range(width // stride):
      mask = np.ones((height, width), np.float32)
      mask[max(0, (row + offset) * stride - half):row * stride + half,
           max(0, (col + offset) * stride - half):col * stride + half] = 0
      masks.append(mask)
  return np.stack(masks)


@functools.partial(jax.jit, static_argnums=(0, 5))
def _occlusion(graphdef, state, x6, targets, masks, batch_size) -> jax.Array:
  model = _merge(graphdef, state)
  original = _select(model(x6), targets)  # (N, T)
  perturbed = jax.vmap(_select, (0, None))(
      _masked_logits(graphdef, state, x6, masks, batch_size), targets)  # (M, N, T)
  occluded = 1 - masks
  # Each occluded pixel gets an equal share of the drop in the logit.
  share = occluded / occluded.sum(axis=(1, 2), keepdims=True)
  attributions = jnp.einsum("mnt,mhw->nthw", original[None] - perturbed, share)
  return attributions[..., None]


def occlusion(model: nnx.Module, x6: jax.Array, targets, kernel: int = 32, stride: int = 32,
              batch_size: int = 16) -> jax.Array:
  """Occlusion as the official explainer computes it: the drop of the target logit when
  the input (every channel) is zeroed under a mask, shared by the pixels it zeroed.

  Every pixel receives, for each mask that zeroes it, the logit's drop divided by
  the number of pixels the mask zeroed. The papers' presets are registered by
  name: `occ5` (5, 2), `occ9` (9, 2), `occ9_ti` (9, 4), `occ13_ti` (13, 4).

  Args:
    kernel: the official `ks` (see `occlusion_masks` for the geometry).
    stride: the distance between mask positions; must divide the image size.
    batch_size: masked copies evaluated at once per image batch.
  """
  targets, squeeze = _prepare(model, x6, targets)
  height, width = x6.shape[1:3]
  if kernel < 1 or stride < 1:
    raise UserError(f"occlusion kernel and stride must be >= 1, got {kernel} and {stride}")
  if height % stride or width % stride:
    raise UserError(f"the occlusion stride {stride} must divide the image size "
                    f"{height}×{width} (as in the official explainer)")
  masks = jnp.asarray(occlusion_masks(height, width, kernel, stride))
  return _finish(_occlusion(*_split(model), x6, targets, masks, batch_size), squeeze)


@functools.lru_cache(maxsize=8)
def rise_masks(count: int, height: int, width: int, cells: int = 8,
               keep_probability: float = 0.1, seed: int = 42) -> np.ndarray:
  """The official RISE masks (Petsiuk et al.; B-cos v2's explainer): (count, H, W) float32.

  Drawn on the host from NumPy's legacy stream after `np.random.seed(seed)`, as
  the official code does, so the same seed gives the same masks: a cells×cells
  grid of cells kept with `keep_probability`, each upsampled bilinearly
  (scikit-image, mode "reflect", no anti-aliasing) to (cells + 1) cell sizes and
  cropped at a random shift. Cached per setting.
  """
  from skimage.transform import resize  # noqa: PLC0415  (only RISE needs it)

  rng = np.random.RandomState(seed)  # the stream of np.random.seed(seed)
  cell = np.ceil(np.array([height, width]) / cells)
  up_size = (cells + 1) * cell
  grids = (rng.rand(count, cells, cells) < keep_probability).astype("float32")
  masks = np.empty((count, height, width))
  for i in range(count):
    x, y = rng.randint(0, cell[0]), rng.randint(0, cell[1])
    masks[i] = resize(grids[i], up_size, order=1, mode="reflect",
                      anti_aliasing=False)[x:x + height, y:y + width]
  masks = masks.astype(np.float32)
  masks.flags.writeable = False  # shared through the cache
  return masks


def _to_probabilities(logits: jax.Array, bcos: bool) -> jax.Array:
  # Sigmoids for B-cos models (trained with BCE: the official `to_probabilities`),
  # a softmax for conventional ones (the official explainers' default).
  return jax.nn.sigmoid(logits) if bcos else jax.nn.softmax(logits, axis=-1)


@functools.partial(jax.jit, static_argnums=(0, 6, 7))
def _rise(graphdef, state, x6, targets, masks, keep_probability, batch_size, bcos):
  probabilities = _to_probabilities(
      _masked_logits(graphdef, state, x6, masks, batch_size), bcos)  # (M, N, C)
  scores = jax.vmap(_select, (0, None))(probabilities, targets)  # (M, N, T)
  saliency = jnp.einsum("mnt,mhw->nthw", scores, masks) / (masks.shape[0] * keep_probability)
  return saliency[..., None]


def rise(model: nnx.Module, x6: jax.Array, targets, masks: int = 500, cells: int = 8,
         keep_probability: float = 0.1, seed: int = 42, batch_size: int = 16) -> jax.Array:
  """RISE as the official explainer computes it: the target's probability under random
  masks, averaged with each mask as weight, divided by the keep probability.

  Args:
    masks: number of random masks (the official N; the same masks for every image).
    cells: the mask grid is cells × cells before upsampling (the official s).
    keep_probability: chance that a grid cell is kept (the official p1).
    seed: the legacy NumPy seed of the masks (42 in the official code).
  """
  targets, squeeze = _prepare(model, x6, targets)
  mask_array = jnp.asarray(rise_masks(masks, x6.shape[1], x6.shape[2], cells,
                                      keep_probability, seed))
  return _finish(_rise(*_split(model), x6, targets, mask_array, keep_probability, batch_size,
                       models.info(model).bcos), squeeze)


# -- LIME.

def quickshift_segments(image_rgb: np.ndarray, kernel_size: float = 4, max_dist: float = 200,
                        ratio: float = 0.2, seed: int = 42) -> np.ndarray:
  """Superpixels of one RGB image in [0, 1] as LIME's `SegmentationAlgorithm` makes them:
  quickshift on the image as given (its dtype kept) with quickshift's own seed, 42."""
  from skimage.segmentation import quickshift  # noqa: PLC0415  (only LIME needs it)

  return quickshift(np.asarray(image_rgb), kernel_size=kernel_size, max_dist=max_dist,
                    ratio=ratio, rng=seed)


def lime_surrogate(samples: np.ndarray, outputs: np.ndarray, kernel_width: float = 0.25,
                   alpha: float = 1.0) -> np.ndarray:
  """LIME's weighted ridge regression of outputs on superpixel indicators.

  Args:
    samples: (S, F) 0/1 indicators; row 0 is the unperturbed image (all ones).
    outputs: (S, T) the model's outputs for each explained class.

  Returns:
    (F, T) the superpixels' weights.
  """
  # Sample weights: an exponential kernel on the cosine distance to the image.
  norms = np.linalg.norm(samples, axis=1) * np.linalg.norm(samples[0])
  distances = 1 - samples @ samples[0] / np.maximum(norms, 1e-12)
  weights = np.sqrt(np.exp(-distances**2 / kernel_width**2))
  # Ridge with an intercept: centre by the weighted means, then solve.
  mean_x = weights @ samples / weights.sum()
  mean_y = weights @ outputs / weights.sum()
  xc, yc = samples - mean_x, outputs - mean_y
  gram = xc.T @ (weights[:, None] * xc) + alpha * np.eye(samples.shape[1])
  return np.linalg.solve(gram, xc.T @ (weights[:, None] * yc))


@functools.partial(jax.jit, static_argnums=(0, 3))
def _probabilities(graphdef, state, x, bcos: bool) -> jax.Array:
  return _to_probabilities(_merge(graphdef, state)(x), bcos)


def lime(model: nnx.Module, x6: jax.Array, targets, samples: int = 500, features: int = 5,
         seed: int = 0, batch_size: int = 50) -> jax.Array:
  """LIME as the official explainer runs `lime`'s `LimeImageExplainer`: 1 on the
  `features` superpixels with the largest positive weights for the target, 0
  elsewhere; (N[, T], H, W, 1).

  Draw for draw the package's procedure: quickshift superpixels of the RGB
  image (kernel 4, max_dist 200, ratio 0.2, quickshift's seed 42); switched-off
  superpixels take their mean colour; `samples` on/off rows from one NumPy
  `RandomState(seed)` (after the one draw the explainer makes for its unused
  segmentation seed; the first row all on), image after image; the model's
  probabilities of the perturbed images (encoded as the model wants them);
  cosine distances to the all-on row under an exponential kernel of width
  0.25, and the ridge fit (alpha 1, intercept) of `lime_base`. With
  `seed=1234` it equals the official explainer run after `np.random.seed(1234)`.
  Runs on the host, image by image; the model runs in batches on the device.
  """
  targets, squeeze = _prepare(model, x6, targets)
  if samples % batch_size:
    raise UserError(f"samples ({samples}) must be a multiple of batch_size ({batch_size})")
  graphdef, state = _split(model)
  found = models.info(model)
  encode = jax.jit(found.encoding.encode)
  rng = np.random.RandomState(seed)
  rgb_images = np.asarray(found.encoding.to_rgb(x6), np.float32)
  targets = np.asarray(targets)
  results = np.zeros((*targets.shape, *rgb_images.shape[1:3], 1), np.float32)
  for n, image in enumerate(rgb_images):
    segments = quickshift_segments(image)
    count = len(np.unique(segments))
    fudged = image.copy()
    for segment in range(count):  # the superpixel's mean colour, channel by channel
      inside = segments == segment
      fudged[inside] = [np.mean(image[inside][:, c]) for c in range(image.shape[-1])]
    rng.randint(0, high=1000)  # the explainer's draw of a segmentation seed (unused)
    indicators = rng.randint(0, 2, samples * count).reshape(samples, count)
    indicators[0] = 1
    outputs = []
    for start in range(0, samples, batch_size):
      on = indicators[start:start + batch_size][:, segments]  # (B, H, W)
      perturbed = np.where(on[..., None] == 1, image[None], fudged[None])
      outputs.append(np.asarray(_probabilities(graphdef, state, encode(jnp.asarray(perturbed)),
                                               found.bcos)))
    outputs = np.concatenate(outputs)[:, targets[n]]  # (S, T)
    coefficients = lime_surrogate(indicators.astype(np.float64), outputs.astype(np.float64))
    for t in range(targets.shape[1]):
      order = np.argsort(-np.abs(coefficients[:, t]), kind="stable")
      chosen = [i for i in order if coefficients[i, t] > 0][:features]
      results[n, t, ..., 0] = np.isin(segments, chosen)
  return _finish(jnp.asarray(results), squeeze)


METHODS: dict[str, Method] = {
    "bcos": bcos,
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "deeplift": deeplift,
    "guided_backprop": guided_backprop,
    "grad_cam": grad_cam,
    "occlusion": occlusion,
    # The papers' Occlusion presets (kernel, stride).
    "occ5": functools.partial(occlusion, kernel=5, stride=2),
    "occ9": functools.partial(occlusion, kernel=9, stride=2),
    "occ9_ti": functools.partial(occlusion, kernel=9, stride=4),
    "occ13_ti": functools.partial(occlusion, kernel=13, stride=4),
    "rise": rise,
    "lime": lime,
}


# The names the official explainers (and the papers' figures) give the methods.
PAPER_LABELS = {
    "bcos": "Ours", "gradient": "Grad", "input_x_gradient": "IxG",
    "integrated_gradients": "IntGrad", "deeplift": "DeepLIFT", "guided_backprop": "GB",
    "grad_cam": "GCam", "occlusion": "Occlusion", "occ5": "Occ5", "occ9": "Occ9",
    "occ9_ti": "Occ9-TI", "occ13_ti": "Occ13-TI", "rise": "RISE", "lime": "LIME",
}
# Method sets by name: the CVPR paper's comparison (Fig. 6), and every method.
METHOD_SETS = {
    "paper": ("bcos", "gradient", "input_x_gradient", "integrated_gradients", "deeplift",
              "grad_cam", "lime", "rise"),
    "all": tuple(METHODS),
}


def get_method(name: str) -> Method:
  if name not in METHODS:
    raise UserError(f"unknown attribution method {name!r}; known: {', '.join(METHODS)}")
  return METHODS[name]


def methods_by_name(names: Sequence[str], options: dict[str, dict] | None = None, *,
                    bcos: bool = True) -> dict[str, Method]:
  """name -> method with its options bound (e.g. {'occlusion': {'kernel': 16}}).

  Args:
    names: method names, or the sets of `METHOD_SETS` ('paper': the CVPR paper's
      comparison; 'all': every method).
    options: per-method keyword options.
    bcos: whether the model is a B-cos network; the sets leave out the model-inherent
      explanation ('bcos') for a conventional one.
  """
  options = options or {}
  unknown = sorted(set(options) - set(METHODS))
  if unknown:
    raise UserError(f"options for unknown method(s) {unknown}; known: {', '.join(METHODS)}")
  expanded = []
  for name in names:
    members = METHOD_SETS.get(name, (name,))
    if name in METHOD_SETS and not bcos:
      members = tuple(m for m in members if m != "bcos")
    expanded += [m for m in members if m not in expanded]
  return {name: functools.partial(get_method(name), **options.get(name, {})) for name in expanded}
