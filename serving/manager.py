"""Loads, warms up, hot-swaps and unloads model versions found on disk."""

import json
import logging
import os
import threading
from collections.abc import Sequence

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from serving import codec, core, errors, memory
from serving.batching import BatchingOptions, BatchQueue
from serving.config import NEGATIVE_VERSION, ModelConfig, discover_models, is_version_name
from serving.metrics import Metrics
from serving.servable import SAVED_MODEL_FILE, Servable
from tfxlm import contract

log = logging.getLogger(__name__)

WARMUP_FILE = os.path.join(contract.EXTRA_DIR, contract.WARMUP_FILE)
_WARMUP_TEXT = b'warm up'
# The files whose change makes a failed version worth another try.
_FINGERPRINTED_DIRS = ('variables', contract.EXTRA_DIR)


class _Version:
  """What the manager knows of one version directory."""

  def __init__(self, version):
    self.version = version
    self.state = 'START'
    self.code = grpc.StatusCode.OK
    self.message = ''
    self.fingerprint = None


class _Model:
  def __init__(self, config):
    self.config = config
    self.versions = {}  # version -> _Version
    self.serving = {}  # version -> Servable; replaced whole, never mutated, so reads need no lock
    # What the last poll logged about listing the base path: logged again only on a change, so
    # a missing folder is not one warning per poll.
    self.listing = None
    # (label, version) of the labels pointing at a version not served, already warned of.
    self.dangling_labels = set()


class ModelManager:
  """Keeps the right versions of each model loaded, following its version policy.

  A new version is loaded and warmed up beside the serving ones; only then does it become
  visible to requests, by replacing the model's dict of serving versions in one assignment.
  Requests that already hold the old version finish on it. A version that fails to load is
  recorded with its error and skipped by the policy until its files change, so the serving
  version stays.

  Args:
    models: config.ModelConfig list.
    discover_root: a directory searched for more models on every poll (or None).
    batching: batching.BatchingOptions, or None to call signatures directly.
    poll_wait_seconds: seconds between file system polls; 0 polls only at start.
    metrics: metrics.Metrics or None.
    max_request_rows: most rows one request may carry (None: no limit beyond batching's
      max_batch_size).
    execution: memory.ExecutionOptions: rows per call, the memory budget of a request.
  """

  def __init__(
    self,
    models: Sequence[ModelConfig] = (),
    discover_root: str | None = None,
    batching: BatchingOptions | None = None,
    poll_wait_seconds: float = 1.0,
    metrics: Metrics | None = None,
    max_request_rows: int | None = None,
    execution: memory.ExecutionOptions = memory.DEFAULT_EXECUTION,
  ):
    self._execution = execution
    # The string work of every call at once, over all models, stays within one request budget.
    self._string_gate = memory.StringGate(execution.memory_budget_bytes)
    self._models = {m.name: _Model(m) for m in models}
    self._discover_root = discover_root
    self._broken_links = set()  # dangling symlinks under discover_root, already logged
    self._batching = batching
    self._poll_wait_seconds = poll_wait_seconds
    self._metrics = metrics
    self._max_request_rows = max_request_rows
    self._lock = threading.Lock()  # guards _models and version states
    self._poll_lock = threading.Lock()  # one poll at a time
    self._stop = threading.Event()
    self._thread = None
    if metrics is not None:
      metrics.track_versions(self.version_states)
      metrics.track_served(self.serves)

  def start(self) -> None:
    """Loads what is on disk now, then keeps polling in a background thread."""
    self.poll()
    if self._poll_wait_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop, daemon=True, name='model-poller')
      self._thread.start()

  def stop(self) -> None:
    """Stops polling and unloads every version (their batch queues drain first)."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    with self._poll_lock:
      for model in list(self._models.values()):
        self._unload(model, set(model.serving))

  def _poll_loop(self):
    while not self._stop.wait(self._poll_wait_seconds):
      try:
        self.poll()
      except Exception:  # noqa: BLE001 - the poller must outlive a bad directory.
        log.exception('model poll failed')

  def poll(self) -> None:
    """Scans the base paths once: loads wanted versions, then unloads the unwanted."""
    with self._poll_lock:
      if self._discover_root is not None:
        broken = []
        for config in discover_models(self._discover_root, broken_links=broken):
          with self._lock:
            if config.name not in self._models:
              self._models[config.name] = _Model(config)
        self._log_broken_links(broken)
      for model in list(self._models.values()):
        if self._stop.is_set():
          return
        self._poll_model(model)

  def _log_broken_links(self, broken):
    """Warns of each symlink under the discovery root that points nowhere, once while it stays
    broken (not once per poll): a model linked into the root whose folder moved or is gone."""
    for link, target in sorted(set(broken) - self._broken_links):
      log.warning(
        'skipping %s under %s: it is a symlink to %s, which does not exist (re-point or remove'
        ' the link)',
        link,
        self._discover_root,
        target,
      )
    self._broken_links = set(broken)

  def reload(self, models: Sequence[ModelConfig]) -> None:
    """Serves exactly `models` from now on, like TF Serving's HandleReloadConfigRequest.

    All or nothing: first every version the new configuration wants that is not serving yet
    is loaded, beside the serving ones (a new model, a kept model whose base path changed, a
    version a new policy adds), and nothing switches while that runs. When some model of the
    new configuration would have no version serving (its base path is missing or holds no
    version, or none of its wanted versions loads), what was loaded is unloaded again and the
    previous configuration keeps serving, unchanged. Otherwise the new configuration takes
    over in one step: kept models take their new version policy and labels, dropped and moved
    models are unloaded. Returns once the new configuration serves.

    Raises:
      ServingError: FAILED_PRECONDITION naming each model that cannot serve, its base path
        and why (nothing was changed).
    """
    with self._poll_lock:
      current = dict(self._models)
      staged = {}  # name -> (the current model kept at its base path or None, staged model)
      problems = []
      for config in models:
        model = current.get(config.name)
        if model is not None and model.config.base_path != config.base_path:
          model = None
        stage, problem = self._stage(model, config)
        staged[config.name] = (model, stage)
        if problem:
          problems.append(f'model "{config.name}" (base path {config.base_path}): {problem}')
      if problems:
        for _, stage in staged.values():
          self._unload(stage, set(stage.serving))
        raise errors.ServingError(
          grpc.StatusCode.FAILED_PRECONDITION,
          'the new model config was not applied, the previous one still serves: '
          + '; '.join(problems),
        )
      kept = {}
      for name, (model, stage) in staged.items():
        if model is None:
          kept[name] = stage
          continue
        with self._lock:
          model.versions.update(stage.versions)
          model.serving = {**model.serving, **stage.serving}
          model.config = stage.config
        kept[name] = model
      with self._lock:
        self._models = kept
      for name, model in current.items():
        if kept.get(name) is not model:
          self._unload(model, set(model.serving))
      for model in kept.values():
        # Unloads what a kept model's new policy no longer wants; warns of dangling labels.
        self._poll_model(model)

  def _stage(self, model, config):
    """Loads, into a new _Model of `config` that requests do not see yet, the versions
    `config` wants that `model` (the serving model of that name at the same base path, or
    None) does not serve.

    Returns:
      (staged _Model, problem): problem says why the model would serve no version under
      `config`, or is None.
    """
    stage = _Model(config)
    base_path = config.base_path
    try:
      on_disk = _versions_on_disk(base_path)
    except FileNotFoundError:
      return stage, 'the base path does not exist'
    except OSError as e:
      return stage, f'cannot list the base path: {e.strerror or e}'
    if not on_disk:
      return stage, f'no version folder (a number holding {SAVED_MODEL_FILE}) under it'
    wanted = config.wanted(set(on_disk))
    if not wanted:
      return stage, (f'its version policy selects none of the versions on disk {sorted(on_disk)}')
    serving = set(model.serving) if model is not None else set()
    for version in sorted(wanted - serving, reverse=True):
      self._load(stage, version, on_disk[version])
    if wanted & (serving | set(stage.serving)):
      return stage, None
    return stage, '; '.join(stage.versions[v].message for v in sorted(wanted, reverse=True))

  def _poll_model(self, model):
    on_disk = self._list_versions(model)
    if on_disk is None:
      return  # listing failed (a flaky mount, permissions): keep serving what is loaded
    while True:
      failed = {
        v
        for v, info in model.versions.items()
        if v in on_disk
        and info.code != grpc.StatusCode.OK
        and info.fingerprint == _fingerprint(on_disk[v])
      }
      wanted = model.config.wanted(set(on_disk) - failed)
      to_load = wanted - set(model.serving)
      if not to_load:
        break
      version = max(to_load)
      self._load(model, version, on_disk[version])
    self._unload(model, set(model.serving) - wanted)
    self._warn_dangling_labels(model)

  def _warn_dangling_labels(self, model):
    """Warns, once while it lasts, of each version label that points at a version not served
    (TF Serving refuses such a config at load; here the label answers NOT_FOUND until then)."""
    served = sorted(model.serving)
    dangling = {(k, v) for k, v in model.config.labels.items() if v not in model.serving}
    for label, version in sorted(dangling - model.dangling_labels):
      log.warning(
        'model %s: version label "%s" points at version %d, which is not served (served: %s);'
        ' requests for the label are answered NOT_FOUND until it is: push version %d, or'
        ' point the label at a served version in the model config',
        model.config.name,
        label,
        version,
        served or 'none',
        version,
      )
    model.dangling_labels = dangling

  def _list_versions(self, model):
    """_versions_on_disk of the model's base path, logging a listing problem once per change
    (TF Serving keeps polling a missing base path: a version may be pushed there later)."""
    name, base_path = model.config.name, model.config.base_path
    try:
      on_disk, state = _versions_on_disk(base_path), 'ok'
    except FileNotFoundError:
      on_disk, state = None, 'missing'
    except OSError as e:
      on_disk, state = None, f'error: {e}'
    loaded = bool(model.serving)
    key = (state, loaded and state != 'ok')
    if key == model.listing:
      return on_disk
    previous, model.listing = model.listing, key
    if state == 'missing' and loaded:
      log.warning(
        'base path %s of model %s has disappeared; keeping the versions loaded from it',
        base_path,
        name,
      )
    elif state == 'missing':
      log.warning(
        'base path %s of model %s does not exist; the model will be served once a version'
        ' folder appears there (e.g. after the pipeline pushes one)',
        base_path,
        name,
      )
    elif state != 'ok':
      log.warning(
        'cannot list base path %s of model %s (%s); %s',
        base_path,
        name,
        state[len('error: ') :],
        'keeping the versions loaded from it' if loaded else 'will retry on the next polls',
      )
    elif previous is not None:
      log.info(
        'base path %s of model %s %s',
        base_path,
        name,
        'exists now' if previous[0] == 'missing' else 'can be listed again',
      )
    return on_disk

  def _load(self, model, version, path):
    name = model.config.name
    with self._lock:
      info = model.versions.setdefault(version, _Version(version))
      info.state, info.code, info.message = 'LOADING', grpc.StatusCode.OK, ''
      info.fingerprint = _fingerprint(path)
    log.info('loading model %s version %d from %s', name, version, path)
    try:
      servable = Servable(name, version, path)
      warm_up(servable)
    except Exception as e:  # noqa: BLE001 - any load failure must leave the old version serving.
      message = f'failed to load version {version} of model "{name}" from {path}: {e}'
      log.error(message)
      with self._lock:
        info.state, info.code, info.message = 'END', grpc.StatusCode.UNKNOWN, message
      return
    servable.max_rows = self._max_request_rows
    self._size_calls(servable)
    if self._batching is not None:
      for signature in servable.signatures.values():
        if signature.batchable:
          servable.batch_queues[signature.name] = BatchQueue(
            signature, self._batching, self._batch_observer(name, signature.name)
          )
    with self._lock:
      model.serving = {**model.serving, version: servable}
      info.state = 'AVAILABLE'
    log.info('serving model %s version %d', name, version)

  def _size_calls(self, servable):
    """Sets how many rows one call of each batchable signature takes, and the answer budget."""
    execution = self._execution
    servable.split_large = execution.split_large_batches
    servable.request_budget_bytes = execution.memory_budget_bytes
    servable.output_budget_bytes = execution.memory_budget_bytes // 4
    servable.call_budget_bytes = execution.memory_budget_bytes // 2
    servable.string_gate = self._string_gate
    for signature in servable.signatures.values():
      if not signature.batchable:
        continue
      rows = execution.max_execution_batch_size
      if not rows:
        inputs = {key: _synthetic(key, spec) for key, spec in signature.inputs.items()}

        def make_call(n, signature=signature, inputs=inputs):
          tiled = {k: np.repeat(v, n, axis=0) for k, v in inputs.items()}
          return lambda: signature(tiled)

        try:
          rows, per_row = memory.call_rows(execution.memory_budget_bytes, make_call)
        except errors.ServingError as e:  # synthetic rows the model rejects: no measurement
          rows, per_row = 0, None
          log.info('cannot size calls of %s signature %s: %s', servable.name, signature.name, e)
        scale = _generation_scale(servable, signature)
        if per_row is not None and scale > 1:
          # Measured on a short prompt and one new token; a row may fill the whole window.
          per_row *= scale
          rows = max(
            memory.MIN_CALL_ROWS, min(rows, (execution.memory_budget_bytes // 2) // per_row)
          )
        if per_row is not None:
          log.info(
            'model %s v%d signature %s: at most %.2f MiB per row%s, %d rows per call',
            servable.name,
            servable.version,
            signature.name,
            per_row / (1 << 20),
            f" (measured on a {_WARMUP_WINDOW}-token window, scaled {scale}x to the model's)"
            if scale > 1
            else ' measured',
            rows,
          )
      if rows:
        servable.call_rows[signature.name] = rows

  def _batch_observer(self, name, signature_name):
    if self._metrics is None:
      return None
    return lambda rows: self._metrics.observe_batch(name, signature_name, rows)

  def _unload(self, model, versions):
    if not versions:
      return
    with self._lock:
      gone = [model.serving[v] for v in versions]
      model.serving = {v: s for v, s in model.serving.items() if v not in versions}
      for v in versions:
        model.versions[v].state = 'UNLOADING'
    for servable in gone:
      for queue in servable.batch_queues.values():
        queue.close()
      with self._lock:
        model.versions[servable.version].state = 'END'
      log.info('unloaded model %s version %d', model.config.name, servable.version)

  def _model(self, name):
    model = self._models.get(name)
    if model is None:
      raise errors.not_found(
        f'Servable not found for request: Latest({name}): no model named {errors.quoted(name)}'
        ' is configured'
      )
    return model

  def _version_for_label(self, model, label):
    labels = model.config.labels
    if label not in labels:
      raise errors.invalid_argument(
        f'Unrecognized servable version label: {errors.quoted(label)}'
        f' (model "{model.config.name}" has labels {sorted(labels)})'
      )
    return labels[label]

  def resolve(self, name: str, version: int | None = None, label: str | None = None) -> Servable:
    """The Servable a request for model `name` goes to, as TF Serving resolves a ModelSpec.

    Args:
      name: the model name.
      version: a specific version, or None.
      label: a version label (used when version is None), or None.

    Raises:
      ServingError: NOT_FOUND for an unknown model or version, INVALID_ARGUMENT for an unknown
        label, UNAVAILABLE when the model has no version loaded yet.
    """
    model = self._model(name)
    if version is None and label:
      version = self._version_for_label(model, label)
    serving = model.serving
    if version is None:
      if not serving:
        raise errors.ServingError(
          grpc.StatusCode.UNAVAILABLE,
          f'model "{name}" has no version available yet{self._why_none(model)}',
        )
      return serving[max(serving)]
    if version in serving:
      return serving[version]
    info = model.versions.get(version)
    if info is not None and info.state in ('START', 'LOADING'):
      raise errors.ServingError(
        grpc.StatusCode.UNAVAILABLE, f'version {version} of model "{name}" is still loading'
      )
    detail = f': {info.message}' if info is not None and info.message else ''
    if version < 0:
      detail = f': {NEGATIVE_VERSION}'
    raise errors.not_found(
      f'Servable not found for request: Specific({name}, {version}):'
      f' serving versions are {sorted(serving)}{detail}'
    )

  def _why_none(self, model):
    failures = [info.message for info in model.versions.values() if info.message]
    if failures:
      return f' ({failures[-1]})'
    return f' (no version directory with {SAVED_MODEL_FILE} under {model.config.base_path})'

  def status(
    self, name: str, version: int | None = None, label: str | None = None
  ) -> list[tuple[int, str, grpc.StatusCode, str]]:
    """Version statuses of a model, as GetModelStatus reports them.

    Returns:
      A list of (version, state name, grpc.StatusCode, message), highest version first.

    Raises:
      ServingError: NOT_FOUND for an unknown model or a version never seen, INVALID_ARGUMENT
        for an unknown label.
    """
    model = self._model(name)
    if version is None and label:
      version = self._version_for_label(model, label)
    with self._lock:
      rows = [
        (v, i.state, i.code, i.message) for v, i in sorted(model.versions.items(), reverse=True)
      ]
    if version is not None:
      rows = [r for r in rows if r[0] == version]
      if not rows:
        why = f': {NEGATIVE_VERSION}' if version < 0 else ''
        raise errors.not_found(f'Could not find version {version} of model "{name}"{why}')
    if not rows:
      raise errors.not_found(
        f'Could not find any versions of model "{name}" under {model.config.base_path}'
      )
    return rows

  def model_names(self) -> list[str]:
    """The configured model names, sorted."""
    return sorted(self._models)

  def serves(self, name: str, signature: str = '') -> bool:
    """True when model `name` is configured and, if `signature` is given, a serving version of
    it has that signature."""
    model = self._models.get(name)
    if model is None:
      return False
    return not signature or any(signature in s.signatures for s in model.serving.values())

  def ready(self) -> bool:
    """True when every model has at least one version serving."""
    models = list(self._models.values())
    return bool(models) and all(m.serving for m in models)

  def version_states(self) -> list[tuple[str, int, str]]:
    """(model, version, state name) of every version seen, for the metrics."""
    with self._lock:
      return [
        (m.config.name, v, i.state)
        for m in self._models.values()
        for v, i in sorted(m.versions.items())
      ]


def _versions_on_disk(base_path):
  """version -> directory for every numbered subdirectory that holds a saved_model.pb.

  Only ASCII decimal names are versions (others are ignored).

  Raises:
    OSError: when the base path cannot be listed (FileNotFoundError when it does not exist);
      the caller skips the poll, as a transient error must not read as "every version is gone".
  """
  names = os.listdir(base_path)
  return {
    int(n): os.path.join(base_path, n)
    for n in names
    if is_version_name(n) and os.path.isfile(os.path.join(base_path, n, SAVED_MODEL_FILE))
  }


def _fingerprint(path):
  """Changes when any of a version's files is rewritten, so a failed version is retried then:
  saved_model.pb, every variables file (index and data shards) and assets.extra."""
  stamp = []
  names = [SAVED_MODEL_FILE]
  for folder in _FINGERPRINTED_DIRS:
    try:
      names += sorted(os.path.join(folder, n) for n in os.listdir(os.path.join(path, folder)))
    except OSError:
      names.append(folder)
  for name in names:
    try:
      st = os.stat(os.path.join(path, name))
      stamp.append((name, st.st_mtime_ns, st.st_size))
    except OSError:
      stamp.append((name, None))
  return tuple(stamp)


def warm_up(servable: Servable) -> None:
  """Calls every signature before the version serves, so no request pays for the first call.

  Replays assets.extra/tf_serving_warmup_requests (TFRecord of PredictionLog) when the model
  ships it, as TF Serving does; a failing replayed request fails the load. Otherwise each
  signature gets one synthetic row (a tf.Example with `text` for `examples` inputs); a model
  may reject synthetic values, so those failures are only logged.

  Raises:
    ServingError or ValueError: when a replayed warm-up request fails.
  """
  path = os.path.join(servable.path, WARMUP_FILE)
  if os.path.exists(path):
    for record in tf.data.TFRecordDataset(path):
      entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
      kind = entry.WhichOneof('log_type')
      if kind == 'predict_log':
        core.predict(servable, entry.predict_log.request)
      elif kind == 'classify_log':
        core.classify(servable, entry.classify_log.request)
      else:
        raise ValueError(f'{path}: warm-up record of type {kind} is not supported')
    return
  for signature in servable.signatures.values():
    inputs = {key: _synthetic(key, spec) for key, spec in signature.inputs.items()}
    try:
      signature(inputs)
    except errors.ServingError as e:
      log.info(
        'synthetic warm-up of %s v%d signature %s failed (harmless): %s',
        servable.name,
        servable.version,
        signature.name,
        e.message,
      )


# Positions a synthetic generate row takes (the start token, `warm up`, one new token): its
# memory is scaled from there to the model's window.
_WARMUP_WINDOW = 4


def _generation_scale(servable, signature) -> int:
  """How many times a generate row's memory at the model's full window (its seq_len, from the
  trainer config beside our exports) is the synthetic row's; 1 for other signatures and for
  models without that file."""
  if contract.MAX_NEW_TOKENS_INPUT not in signature.inputs:
    return 1
  path = os.path.join(servable.path, contract.EXTRA_DIR, contract.TRAINER_CONFIG_FILE)
  try:
    with open(path, encoding='utf-8') as f:
      seq_len = int(json.load(f)['seq_len'])
  except (OSError, ValueError, KeyError, TypeError):
    return 1
  return max(1, -(-seq_len // _WARMUP_WINDOW))


def _synthetic(key, spec):
  shape = [1 if d is None else d for d in spec.shape.as_list()] if spec.shape.rank else []
  if spec.dtype == tf.string:
    value = (
      codec.text_example(_WARMUP_TEXT).SerializeToString()
      if key in (contract.EXAMPLES_INPUT, contract.CLASSIFY_INPUTS)
      else _WARMUP_TEXT
    )
    return np.full(shape, value, dtype=object)
  # Ones, not zeros: a scalar like max_new_tokens=0 or top_k=0 is often invalid.
  return np.ones(shape, dtype=spec.dtype.as_numpy_dtype)
