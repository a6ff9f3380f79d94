"""Warmup/decay schedule, AdamW without decay on LayerNorm and biases."""

import keras
import keras_hub
import numpy as np
import pytest
import tensorflow as tf

from trainer import optimization


def _lr(schedule, step):
  return float(schedule(step))


def test_linear_warmup_then_linear_decay():
  schedule = optimization.WarmupDecay(1.0, total_steps=110, warmup_steps=10, decay='linear')
  assert _lr(schedule, 0) == pytest.approx(0.1)
  assert _lr(schedule, 4) == pytest.approx(0.5)
  assert _lr(schedule, 9) == pytest.approx(1.0)
  assert _lr(schedule, 10) == pytest.approx(1.0)
  assert _lr(schedule, 60) == pytest.approx(0.5)
  assert _lr(schedule, 110) == pytest.approx(0.0)
  assert _lr(schedule, 500) == pytest.approx(0.0)


def test_cosine_decay_with_floor():
  schedule = optimization.WarmupDecay(
    2.0, total_steps=100, warmup_steps=0, decay='cosine', end_ratio=0.1
  )
  assert _lr(schedule, 0) == pytest.approx(2.0)
  assert _lr(schedule, 50) == pytest.approx(0.2 + 1.8 * 0.5)
  assert _lr(schedule, 100) == pytest.approx(0.2)
  # Cosine stays above linear in the first half.
  linear = optimization.WarmupDecay(2.0, 100, 0, 'linear', 0.1)
  assert _lr(schedule, 25) > _lr(linear, 25)


def test_schedule_rejects_bad_arguments():
  with pytest.raises(ValueError, match='decay must be'):
    optimization.WarmupDecay(1.0, 10, 1, decay='step')
  with pytest.raises(ValueError, match='must not exceed total_steps'):
    optimization.WarmupDecay(1.0, 10, 11)


def test_warmup_steps_for():
  assert optimization.warmup_steps_for(1000, None, 0.06) == 60
  assert optimization.warmup_steps_for(1000, 5, 0.5) == 5
  # A warmup longer than the run is not shortened into one that never decays: it is refused.
  with pytest.raises(ValueError, match=r'warmup_steps \(50\) must not exceed total_steps \(10\)'):
    optimization.WarmupDecay(1.0, 10, optimization.warmup_steps_for(10, 50))


def _backbone():
  return keras_hub.models.BertBackbone(
    vocabulary_size=30,
    num_layers=1,
    num_heads=2,
    hidden_dim=8,
    intermediate_dim=16,
    max_sequence_length=8,
  )


def test_no_decay_on_layer_norm_and_bias_only():
  model = _backbone()
  excluded = {v.path for v in optimization.no_decay_variables(model)}
  assert 'embeddings_layer_norm/gamma' in excluded
  assert 'embeddings_layer_norm/beta' in excluded
  assert any(p.endswith('query/bias') for p in excluded)
  assert not any(p.endswith('kernel') or p.endswith('embeddings') for p in excluded)


def test_adamw_decays_kernels_but_not_excluded_weights():
  model = _backbone()
  optimizer = optimization.create_optimizer(
    model, learning_rate=0.1, total_steps=10, warmup_steps=0, weight_decay=0.5, clip_norm=1.0
  )
  variables = model.trainable_variables
  before = {v.path: np.array(v) for v in variables}
  optimizer.apply_gradients([(keras.ops.zeros_like(v), v) for v in variables])
  for v in variables:
    changed = not np.allclose(np.array(v), before[v.path])
    nonzero = np.abs(before[v.path]).sum() > 0
    if v.path.endswith('/gamma') or v.path.endswith('/bias') or v.path.endswith('/beta'):
      assert not changed, v.path
    elif nonzero:
      assert changed, v.path


def test_loss_scaling_wraps_the_optimizer():
  optimizer = optimization.create_optimizer(
    _backbone(), learning_rate=0.1, total_steps=10, warmup_steps=1, loss_scaling=True
  )
  assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
  assert float(optimization.current_learning_rate(optimizer)) == pytest.approx(0.1)


def _adamw(cls, variables):
  schedule = optimization.WarmupDecay(0.05, total_steps=20, warmup_steps=2)
  optimizer = cls(
    learning_rate=schedule,
    weight_decay=0.1,
    beta_1=0.9,
    beta_2=0.999,
    epsilon=1e-6,
    global_clipnorm=1.0,
  )
  optimizer.exclude_from_weight_decay(var_list=variables[:1])
  return optimizer


def _train(cls, steps, traced, strategy=None):
  """Weights and moments after `steps` AdamW updates of three weights (one not decayed)."""
  strategy = strategy or tf.distribute.get_strategy()
  rng = np.random.default_rng(3)
  with strategy.scope():
    variables = [
      keras.Variable(rng.normal(size=shape).astype('float32'), name=f'w{i}')
      for i, shape in enumerate([(5,), (4, 3), (6, 2)])
    ]
    optimizer = _adamw(cls, variables)
  grads = [
    [tf.constant(rng.normal(size=v.shape).astype('float32')) for v in variables]
    for _ in range(steps)
  ]

  def step(g):
    strategy.run(lambda *g: optimizer.apply_gradients(zip(g, variables)), args=tuple(g))

  step = tf.function(step) if traced else step
  for g in grads:
    step(g)
  return [np.array(v) for v in variables + optimizer.variables], optimizer


@pytest.mark.parametrize('traced', [False, True], ids=['eager', 'traced'])
def test_the_one_kernel_adamw_steps_as_keras_adamw(traced):
  ours, optimizer = _train(optimization.AdamW, 6, traced)
  theirs, _ = _train(keras.optimizers.AdamW, 6, traced)
  assert len(ours) == len(theirs)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)
  assert int(optimizer.iterations) == 6


def test_the_one_kernel_adamw_is_one_adam_op_per_weight_and_one_schedule():
  rng = np.random.default_rng(0)
  variables = [keras.Variable(rng.normal(size=(3, 2)).astype('float32')) for _ in range(4)]
  optimizer = _adamw(optimization.AdamW, variables)
  optimizer.build(variables)
  step = tf.function(lambda g: optimizer.apply_gradients(zip(g, variables)))
  graph = step.get_concrete_function([tf.ones((3, 2))] * 4).graph
  types = [op.type for op in graph.get_operations()]
  assert types.count('ResourceApplyAdam') == 4
  # The schedule (one `where`) runs once for the weight decay and once for the Adam step, not
  # once more per decayed weight as in Keras' AdamW.
  assert types.count('SelectV2') == 2, types.count('SelectV2')


def test_mirrored_variables_keep_keras_update():
  strategy = tf.distribute.MirroredStrategy(['/cpu:0'])
  ours, _ = _train(optimization.AdamW, 3, traced=True, strategy=strategy)
  theirs, _ = _train(keras.optimizers.AdamW, 3, traced=True, strategy=strategy)
  for a, b in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-6)


def test_checkpoints_of_the_one_kernel_adamw_and_keras_adamw_restore_into_each_other(tmp_path):
  """The same slot variables and nothing else: a run resumes across the change either way."""
  _, ours = _train(optimization.AdamW, 2, traced=True)
  _, theirs = _train(keras.optimizers.AdamW, 2, traced=True)
  for source, target, name in ((ours, theirs, 'ours'), (theirs, ours, 'theirs')):
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / name))
    tf.train.Checkpoint(optimizer=target).read(path).assert_consumed()
