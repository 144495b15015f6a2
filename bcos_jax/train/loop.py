"""The train-and-evaluate loop: data, model, sharded steps, checkpoints, logs, explanations."""

import contextlib
import functools
import json
import math
import pathlib
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import ConfigDict

from bcos_jax import console, data, explain, models, sharding
from bcos_jax.data import mixing
from bcos_jax.errors import UserError
from bcos_jax.evaluate import accuracy
from bcos_jax.models.saving import config_as_json
from bcos_jax.train import checkpointing, config_schema, init_from, losses, steps
from bcos_jax.train import state as train_state
from bcos_jax.train.metric_writer import MetricWriter, format_eta
from bcos_jax.train.schedules import make_schedule


class NonFiniteLossError(UserError, FloatingPointError):
  """The loss became NaN or Inf; the last good checkpoint is kept."""


class TrainingStopped(Exception):  # noqa: N818  (not an error: a run asked to stop)
  """SIGTERM stopped the run before its last step; its checkpoint is saved.

  Running the same command again resumes from it (`python -m bcos_jax.main` exits
  with status 75, EX_TEMPFAIL, so that a scheduler can requeue it).
  """


@contextlib.contextmanager
def _preemption_flag():
  """Yields a function step -> whether to stop (save and return) after that step.

  One process: True after a SIGTERM (the old handler is restored on exit). Several
  processes (`jax.distributed`): JAX's preemption service, which hears the SIGTERM
  of any process and names the same step to every one of them, so all save the
  same checkpoint (each process stopping on its own signal would leave the others
  waiting in a collective).
  """
  if jax.distributed.is_initialized():
    yield multihost_utils.reached_preemption_sync_point
    return
  flag = {"stop": False}

  def handler(signum, frame):
    del signum, frame  # the loop says so when it stops (printing here is not signal-safe)
    flag["stop"] = True

  try:
    previous = signal.signal(signal.SIGTERM, handler)
  except ValueError:  # not the main thread: no preemption handling
    yield lambda step: False
    return
  try:
    yield lambda step: flag["stop"]
  finally:
    signal.signal(signal.SIGTERM, previous)


def _optimizer(config: ConfigDict, schedule: optax.Schedule, accumulate_steps: int = 1,
               param_labels: nnx.State | None = None) -> optax.GradientTransformation:
  """Adam, after optional global-norm or adaptive (unit-wise, v2) gradient clipping.

  Args:
    config: the training config; its `optimizer` and `finetune` fields are read.
    schedule: the learning rate per optimiser update.
    accumulate_steps: batches per update (`optax.MultiSteps`).
    param_labels: `train.state.param_labels` of the model; needed when `config.finetune`
      treats the head and the backbone differently: a linear probe gives the backbone zero
      updates (`optax.set_to_zero`, so its parameters stay bit for bit), full fine-tuning a
      rate scaled by `backbone_lr_factor`.
  """
  options, finetune = config.optimizer, config.finetune
  clipping = []
  if options.grad_clip_norm:
    clipping.append(optax.clip_by_global_norm(options.grad_clip_norm))
  if options.agc_clip_factor:
    clipping.append(optax.adaptive_grad_clip(options.agc_clip_factor, eps=1e-3))
  if finetune.mode == "linear_probe":
    # Clipping sees the head's gradients alone: the backbone is not part of the model trained.
    optimizer = optax.multi_transform(
        {train_state.HEAD: optax.chain(*clipping, optax.adam(schedule)),
         train_state.BACKBONE: optax.set_to_zero()}, param_labels)
  elif finetune.backbone_lr_factor != 1:
    factor = finetune.backbone_lr_factor
    optimizer = optax.chain(*clipping, optax.multi_transform(
        {train_state.HEAD: optax.adam(schedule),
         train_state.BACKBONE: optax.adam(lambda count: factor * schedule(count))},
        param_labels))
  else:  # one group: the optimiser state keeps the structure of runs that had no finetune field
    optimizer = optax.chain(*clipping, optax.adam(schedule))
  if accumulate_steps > 1:  # a virtual batch: one update per accumulate_steps batches
    optimizer = optax.MultiSteps(optimizer, every_k_schedule=accumulate_steps)
  return optimizer


def _batch_transform(config: ConfigDict, num_classes: int):
  options = config.mixing
  if not (options.mixup_alpha or options.cutmix_alpha):
    return None
  return functools.partial(mixing.mixup_cutmix, num_classes=num_classes,
                           mixup_alpha=options.mixup_alpha, cutmix_alpha=options.cutmix_alpha,
                           switch_prob=options.switch_prob)


def _evaluated_variables(state: train_state.TrainState, ema: bool) -> tuple:
  """The model variables evaluation and explanations use: (params or their EMA, the rest)."""
  return (state.ema_params if ema else state.params, state.model_state)


def _class_name(label: int, class_names) -> str:
  return class_names[label] if class_names else str(label)


def write_explanations(path: pathlib.Path, graphdef, variables: tuple, images_uint8,
                       labels, class_names=None) -> None:
  """Colour explanations of fixed test images, as the official code logs them.

  Each column is one test image, titled "true <class> / predicted <class>"
  (names when the dataset has them); the rows are the input and the colour
  explanation of the predicted class.

  Args:
    variables: the model's (params, other variables) as host arrays (the loop gathers
      them, `sharding.gathered`, never the optimiser state).
    class_names: the dataset's label names, or None for the label numbers.
  """
  model = nnx.merge(graphdef, *variables)
  x6 = models.input_transform(model)(jnp.asarray(images_uint8))
  result = explain.explain(model, x6)
  rgba = explain.to_rgba(x6, result.weights, smooth=3 if x6.shape[1] <= 64 else 15)
  titles = [f"true {_class_name(int(y), class_names)}\npredicted "
            f"{_class_name(int(p), class_names)}"
            for y, p in zip(labels, result.targets, strict=True)]
  explain.save_explanation_grid(path, images_uint8, rgba, titles,
                                row_labels=("input", "explanation\n(predicted class)"))


def _model_builder(config: ConfigDict, num_classes: int) -> tuple:
  """(build_model, its args, the console line on init_from or None) for `create_sharded`.

  A random initialisation is built inside the creating jit, so its variables are
  made in their shards. A fine-tuning run's variables come from a file: they are
  loaded whole, then passed in and sharded.
  """
  if config.init_from is None:
    return (lambda: init_from.initial_model(config, num_classes)[0]), (), None
  model, origin = init_from.initial_model(config, num_classes)
  graphdef, variables = nnx.split(model)
  return (lambda loaded: nnx.merge(graphdef, loaded)), (variables,), origin


def _check_workdir_model(workdir: pathlib.Path, config: ConfigDict) -> None:
  """A workdir that holds another model's run is not trained over."""
  path = workdir / "config.json"
  if not path.is_file():
    return
  try:
    previous = json.loads(path.read_text()).get("model")
  except (json.JSONDecodeError, AttributeError):
    return  # not ours to judge; the checkpoint check still applies
  current = json.loads(config.model.to_json_best_effort())
  if previous is not None and previous != current:
    raise UserError(
        f"{workdir} holds a run of model {previous.get('name')!r} with options "
        f"{previous.get('overrides')} (its config.json), and this config trains "
        f"{current.get('name')!r} with {current.get('overrides')}: use a new --workdir, or "
        "resume that run with the config it was started with")


def train_and_evaluate(config: ConfigDict, workdir: str | pathlib.Path) -> dict[str, float]:
  """Trains `config.model` on `config.dataset`, evaluating and checkpointing into `workdir`.

  Starts from the variables of `config.init_from` when it is set (fine-tuning;
  `config.finetune` says what trains), and resumes from the newest checkpoint in
  `workdir` if there is one (a restarted fine-tuning run continues), on any
  mesh: every process of a multi-host run calls it, and each reads its rows of
  the same global batches, so the result does not depend on the topology.
  `config.classes` restricts both splits.

  Returns:
    The last evaluation's metrics.

  Raises:
    TrainingStopped: SIGTERM stopped the run early; its checkpoint is saved.
    NonFiniteLossError: the loss became NaN/Inf (the last good checkpoint stays).
  """
  config = config_schema.complete(config)
  workdir = pathlib.Path(workdir)
  # Everything the user may have mistyped is checked before anything is written.
  _check_workdir_model(workdir, config)
  train_source = data.open_source(config.dataset, config.train_split, config.data_dir,
                                  config.classes)
  eval_source = data.open_source(config.dataset, config.eval_split, config.data_dir,
                                 config.classes)
  build_model, build_args, origin = _model_builder(config, train_source.num_classes)
  model = nnx.eval_shape(build_model, *build_args)  # the architecture; no variable made yet
  name = model.config.name  # config.model.name may be empty: init_from's architecture
  mesh = sharding.make_mesh(config.num_devices, config.fsdp)
  sharding.check_batch_divides(config.batch_size, mesh)
  rows = sharding.process_rows(mesh, config.batch_size)  # this process's rows of each batch
  recipe = data.get_recipe(config.recipe)
  host_transform, device_transform = data.train_transforms(config.recipe,
                                                           config.photometric_on_device)
  if device_transform is not None and _batch_transform(config, train_source.num_classes):
    raise UserError("config.photometric_on_device=True with mixup/cutmix (config.mixing): "
                    "the host mixes images before the device would jitter them, the wrong "
                    "order; turn one of them off")
  workdir.mkdir(parents=True, exist_ok=True)
  is_main = jax.process_index() == 0
  say = console.say if is_main else (lambda message: None)
  if is_main:
    (workdir / "config.json").write_text(config.to_json_best_effort(indent=2))
  logging.info("devices: %s; mesh %s", jax.devices(), dict(mesh.shape))
  steps_per_epoch = max(len(train_source) // config.batch_size, 1)
  total_steps = config.num_steps or int(config.num_epochs * steps_per_epoch)

  devices = jax.devices()
  say(f"training {name} on {config.dataset} ({len(train_source):,} "
      f"{config.train_split} / {len(eval_source):,} {config.eval_split} images): "
      f"{total_steps:,} steps of {config.batch_size} ({total_steps / steps_per_epoch:.3g} "
      f"epochs) on {len(devices)} {devices[0].platform} device(s), mesh "
      f"{' × '.join(f'{k}={v}' for k, v in mesh.shape.items())}")
  if origin:
    say(origin)
  options = steps.StepOptions.from_config(config)
  if options.aux_weight and not models.has_aux_head(model):
    raise UserError(f"config.loss.aux_weight={options.aux_weight} needs a model with an "
                     f"auxiliary head, and {name} (with its overrides) has none: "
                     "set config.loss.aux_weight=0")
  bcos_model = models.info(model).bcos
  # The schedule counts optimiser updates: one per accumulate_steps batches.
  schedule = make_schedule(config.optimizer, max(total_steps // options.accumulate_steps, 1),
                           max(steps_per_epoch // options.accumulate_steps, 1))
  optimizer = _optimizer(config, schedule, options.accumulate_steps,
                         train_state.param_labels(model))
  use_ema = options.ema_decay is not None
  graphdef = nnx.graphdef(model)
  model_config = config_as_json(model)
  del model
  abstract_state, create_state = train_state.create_sharded(
      build_model, optimizer, mesh, ema=use_ema, args=build_args)
  manager = checkpointing.manager(workdir, config.keep_checkpoints)
  # Restored straight into the shardings of this mesh (which may differ from the saving run's).
  state = checkpointing.restore_latest(manager, abstract_state)
  if state is None:
    state = create_state()
  else:
    say(f"resumed from the checkpoint of step {int(state.step)} in {workdir / 'checkpoints'}"
        + ("; config.init_from is not used: a restarted run continues" if origin else ""))
  del build_args, create_state  # they hold a loaded model's variables, in the state now
  # The data position is the step: global batch s is the same on any topology.
  train_iterator = iter(data.train_dataset(
      train_source, host_transform, seed=config.seed, global_batch_size=config.batch_size,
      rows=rows, start_step=int(state.step), worker_count=config.worker_count,
      batch_transform=_batch_transform(config, train_source.num_classes)))
  train_step = steps.make_train_step(graphdef, optimizer, schedule, mesh, state, options,
                                     device_transform=device_transform)
  eval_step = accuracy.make_eval_step(graphdef, _evaluated_variables(state, use_ema), mesh,
                                      loss=losses.bce_of_labels)
  writer = MetricWriter(workdir, enabled=is_main, tensorboard=config.tensorboard)

  explain_count = min(config.num_explanations, len(eval_source))
  if explain_count and not bcos_model:
    logging.info("%s is not a B-cos network: no explanations are written during training",
                 name)
    explain_count = 0
  explain_records = [recipe.eval(eval_source[i]) for i in range(explain_count)]
  explain_images = np.stack([r["image"] for r in explain_records]) if explain_count else None
  explain_labels = [r["label"] for r in explain_records]
  class_names = getattr(eval_source, "class_names", None)
  (workdir / "explanations").mkdir(exist_ok=True)

  def run_eval(step: int) -> dict[str, float]:
    variables = _evaluated_variables(state, use_ema)
    metrics = accuracy.evaluate(eval_step, variables, eval_source, recipe.eval,
                                global_batch_size=config.batch_size, mesh=mesh,
                                worker_count=config.eval_worker_count).metrics()
    writer.write(step, metrics)
    say(f"step {step:,}/{total_steps:,}: {config.eval_split} top-1 {metrics['eval/top1']:.4f}, "
        f"top-5 {metrics['eval/top5']:.4f}, loss {metrics['eval/loss']:.4g}")
    if explain_count:
      # Every process takes part in the gather (a collective); process 0 writes.
      gathered = jax.device_get(sharding.gathered(variables, mesh))
      if is_main:
        write_explanations(workdir / "explanations" / f"step_{step:07d}.png", graphdef,
                           gathered, explain_images, explain_labels, class_names)
    return metrics

  def save(step: int) -> None:
    checkpointing.save(manager, step, state, model_config)

  start = int(state.step)
  eval_metrics = run_eval(start) if start == 0 else {}
  log_every, pending = config.log_every, []
  last_time, last_step = time.perf_counter(), start
  progress = tqdm.tqdm(total=total_steps, initial=start, unit="step", dynamic_ncols=True,
                       disable=not (is_main and config.progress_bar))
  stopping = False
  with _preemption_flag() as stop_after, progress:
    for step in range(start + 1, total_steps + 1):
      batch = sharding.shard_batch(next(train_iterator), mesh)
      state, metrics = train_step(state, batch)
      progress.update()
      pending.append(metrics)
      last = step == total_steps
      stopping = stop_after(step) and not last
      checkpoint_now = step % config.checkpoint_every == 0 or last
      # Metrics are checked (NaN) before every checkpoint, so none holds a bad state.
      if step % log_every == 0 or last or stopping or checkpoint_now:
        averaged = {f"train/{k}": float(np.mean([m[k] for m in jax.device_get(pending)]))
                    for k in pending[0]}
        pending = []
        if not math.isfinite(averaged["train/loss"]):
          manager.wait_until_finished()
          raise NonFiniteLossError(
              f"the training loss is {averaged['train/loss']} at step {step}; the last good "
              f"checkpoint is step {manager.latest_step()} in {workdir / 'checkpoints'}. Lower "
              "config.optimizer.learning_rate, or clip gradients (config.optimizer."
              "grad_clip_norm), and resume")
        now = time.perf_counter()
        rate = (step - last_step) / max(now - last_time, 1e-9)
        averaged["train/steps_per_s"] = rate
        averaged["train/images_per_s"] = rate * config.batch_size
        writer.write(step, averaged)
        progress.set_postfix(loss=f"{averaged['train/loss']:.4g}", refresh=False)
        logging.info("step %d/%d (%.1f%%), %.2f steps/s, ETA %s", step, total_steps,
                     100 * step / total_steps, rate, format_eta((total_steps - step) / rate))
        last_time, last_step = now, step
      if step % config.eval_every == 0 or last:
        eval_metrics = run_eval(step)
      if checkpoint_now or stopping:
        save(step)
      if stopping:
        break
  manager.wait_until_finished()
  writer.close()
  if stopping:
    message = (f"SIGTERM: stopped after step {step} with its checkpoint saved; the same "
               "command resumes from it")
    say(message)
    raise TrainingStopped(message)
  say(f"checkpoints: {workdir / 'checkpoints'} (newest: step {manager.latest_step()}); metrics: "
      f"{workdir / 'metrics.jsonl'}"
      + (f"; explanations: {workdir / 'explanations'}/step_*.png" if explain_count else ""))
  if train_step._cache_size() > 1:  # noqa: SLF001  (a shape or dtype changed between steps)
    logging.warning("the train step was compiled %d times", train_step._cache_size())
  return eval_metrics
