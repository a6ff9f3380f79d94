"""Which models to serve, and how: TF Serving's ModelServerConfig, BatchingParameters and
MonitoringConfig text protos."""

import dataclasses
import logging
import os
import re

from google.protobuf import (
  descriptor_pb2,
  descriptor_pool,
  message_factory,
  text_format,
  wrappers_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from serving.batching import BatchingOptions

log = logging.getLogger(__name__)

# A version folder's name: ASCII digits only (str.isdigit() also accepts '²' or '٣'), and a
# number that fits the int64 of ModelSpec.version.
_VERSION_NAME = re.compile(r'[0-9]{1,18}')
# Why a negative version is never found, said alike by REST and gRPC.
NEGATIVE_VERSION = 'versions are numbered from 0 up'


def is_version_name(name: str) -> bool:
  """True for a folder name that is a model version: ASCII decimal digits, below 10**18."""
  return _VERSION_NAME.fullmatch(name) is not None


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One model to serve.

  Attributes:
    name: the model name clients ask for.
    base_path: the directory holding one numbered subdirectory per version.
    latest: serve the `latest` highest versions (used when `versions` is empty).
    versions: serve exactly these versions.
    labels: version label -> version (e.g. {'stable': 3, 'canary': 4}).
  """

  name: str
  base_path: str
  latest: int = 1
  versions: tuple = ()
  labels: dict = dataclasses.field(default_factory=dict)

  def wanted(self, available: set[int]) -> set[int]:
    """The versions to serve among the `available` ones on disk (a set of ints)."""
    if self.versions:
      return set(self.versions) & available
    return set(sorted(available)[-self.latest :]) if self.latest else set(available)


def parse_model_config_file(path: str) -> list[ModelConfig]:
  """Reads a ModelServerConfig text proto (the --model_config_file of tensorflow_model_server).

  Relative base paths are taken from the current directory, as TF Serving does.

  Raises:
    ValueError: naming the file and what is wrong in it.
  """
  proto = _read_text_proto(path, model_server_config_pb2.ModelServerConfig())
  return models_from_proto(proto, where=path)


def _read_text_proto(path: str, proto):
  """`proto` filled from the text proto file at `path`.

  Raises:
    ValueError: naming the file and the message type when the text is not one.
  """
  with open(path, encoding='utf-8') as f:
    text = f.read()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    raise ValueError(f'{path}: not a {proto.DESCRIPTOR.name} text proto: {e}') from None
  return proto


def models_from_proto(
  proto: model_server_config_pb2.ModelServerConfig, where: str = 'model config'
) -> list[ModelConfig]:
  """Turns a ModelServerConfig proto into ModelConfigs.

  Raises:
    ValueError: for a custom_model_config, a model without name or base_path, a repeated
      name, or a version policy that selects nothing.
  """
  if proto.WhichOneof('config') != 'model_config_list':
    raise ValueError(f'{where}: only model_config_list is supported')
  models, names = [], set()
  for i, model in enumerate(proto.model_config_list.config):
    if not model.name or not model.base_path:
      raise ValueError(f'{where}: config {i} needs both name and base_path')
    if model.name in names:
      raise ValueError(f'{where}: model name "{model.name}" appears twice')
    if model.model_platform not in ('', 'tensorflow'):
      raise ValueError(
        f'{where}: model "{model.name}": platform "{model.model_platform}" is not'
        ' supported (only tensorflow)'
      )
    names.add(model.name)
    policy = model.model_version_policy
    kind = policy.WhichOneof('policy_choice')
    latest, versions = 1, ()
    if kind == 'latest':
      latest = policy.latest.num_versions or 1
    elif kind == 'all':
      latest = 0
    elif kind == 'specific':
      versions = tuple(sorted(policy.specific.versions))
      if not versions:
        raise ValueError(f'{where}: model "{model.name}": specific policy lists no versions')
    labels = dict(model.version_labels)
    models.append(
      ModelConfig(model.name, os.path.abspath(model.base_path), latest, versions, labels)
    )
  logged = [m.name for m in proto.model_config_list.config if m.HasField('logging_config')]
  if logged:
    log.warning(
      '%s: logging_config of model(s) %s is not used by this server (no request logging); ignored',
      where,
      ', '.join(logged),
    )
  return models


def _batching_parameters_class():
  """Builds TF Serving's BatchingParameters message (not shipped in tensorflow-serving-api)."""
  file = descriptor_pb2.FileDescriptorProto(
    name='serving/batching_parameters.proto',
    package='tensorflow.serving',
    syntax='proto3',
    dependency=['google/protobuf/wrappers.proto'],
  )
  message = file.message_type.add(name='BatchingParameters')
  wrapped = [
    ('max_batch_size', 'Int64Value'),
    ('batch_timeout_micros', 'Int64Value'),
    ('max_enqueued_batches', 'Int64Value'),
    ('num_batch_threads', 'Int64Value'),
    ('thread_pool_name', 'StringValue'),
    ('max_execution_batch_size', 'Int64Value'),
    ('enable_large_batch_splitting', 'BoolValue'),
  ]
  number = 0
  for number, (name, kind) in enumerate(wrapped, 1):
    message.field.add(
      name=name, number=number, label=1, type=11, type_name=f'.google.protobuf.{kind}'
    )
  message.field.add(name='allowed_batch_sizes', number=number + 1, label=3, type=3)
  message.field.add(name='pad_variable_length_inputs', number=number + 2, label=1, type=8)
  pool = descriptor_pool.DescriptorPool()
  pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
  pool.Add(file)
  return message_factory.GetMessageClass(
    pool.FindMessageTypeByName('tensorflow.serving.BatchingParameters')
  )


def parse_batching_parameters_file(path: str) -> BatchingOptions:
  """Reads a BatchingParameters text proto (the --batching_parameters_file of TF Serving).

  Fields this server does not use (allowed_batch_sizes, pad_variable_length_inputs,
  thread_pool_name) are accepted, so TF Serving's files work unchanged, with one warning
  naming those that are set.

  Raises:
    ValueError: naming the file and the problem.
  """
  proto = _read_text_proto(path, _batching_parameters_class()())
  values = {}
  for field in (
    'max_batch_size',
    'batch_timeout_micros',
    'num_batch_threads',
    'max_enqueued_batches',
    'max_execution_batch_size',
  ):
    if proto.HasField(field):
      values[field] = getattr(proto, field).value
  if proto.HasField('enable_large_batch_splitting'):
    values['enable_large_batch_splitting'] = proto.enable_large_batch_splitting.value
  unused = [
    name
    for name, is_set in (
      ('allowed_batch_sizes', bool(proto.allowed_batch_sizes)),
      ('pad_variable_length_inputs', proto.pad_variable_length_inputs),
      ('thread_pool_name', proto.HasField('thread_pool_name')),
    )
    if is_set
  ]
  if unused:
    log.warning(
      '%s: %s not used by this server (batches run at their own size, unpadded); ignored',
      path,
      ' and '.join(unused) + (' are' if len(unused) > 1 else ' is'),
    )
  try:
    return BatchingOptions(**values)
  except ValueError as e:
    raise ValueError(f'{path}: {e}') from None


def _monitoring_config_class():
  """Builds TF Serving's MonitoringConfig message (not shipped in tensorflow-serving-api)."""
  file = descriptor_pb2.FileDescriptorProto(
    name='serving/monitoring_config.proto', package='tensorflow.serving', syntax='proto3'
  )
  prometheus = file.message_type.add(name='PrometheusConfig')
  prometheus.field.add(name='enable', number=1, label=1, type=8)
  prometheus.field.add(name='path', number=2, label=1, type=9)
  monitoring = file.message_type.add(name='MonitoringConfig')
  monitoring.field.add(
    name='prometheus_config',
    number=1,
    label=1,
    type=11,
    type_name='.tensorflow.serving.PrometheusConfig',
  )
  pool = descriptor_pool.DescriptorPool()
  pool.Add(file)
  return message_factory.GetMessageClass(
    pool.FindMessageTypeByName('tensorflow.serving.MonitoringConfig')
  )


def parse_monitoring_config_file(path: str, default_path: str, taken: tuple) -> str | None:
  """Reads a MonitoringConfig text proto (the --monitoring_config_file of TF Serving): the path
  to serve Prometheus metrics at, `default_path` if it names none, None if it does not enable
  them (then, as in TF Serving, the server has no metrics page).

  Raises:
    ValueError: naming the file and what is wrong in it: not a MonitoringConfig, or a metrics
      path that is not absolute, holds a query or spaces, or is one the API uses (`taken`, and
      anything under /v1/).
  """
  proto = _read_text_proto(path, _monitoring_config_class()())
  if not proto.prometheus_config.enable:
    return None
  metrics_path = proto.prometheus_config.path or default_path
  if not re.fullmatch(r'/[!-~]*', metrics_path) or set('?#%') & set(metrics_path):
    raise ValueError(
      f'{path}: prometheus_config path "{metrics_path:.200}" must start with "/" and hold no'
      ' spaces, "?", "#" or "%" (e.g. "/metrics")'
    )
  if metrics_path in taken or metrics_path[:4].lower() == '/v1/':
    raise ValueError(
      f'{path}: prometheus_config path "{metrics_path:.200}" is one of the REST API\'s; choose'
      ' another (e.g. "/metrics")'
    )
  return metrics_path


def discover_models(
  root: str, max_depth: int = 4, broken_links: list | None = None
) -> list[ModelConfig]:
  """Finds every model directory under `root`: one whose subdirectories are numbered versions.

  Used by --model_base_path_root to serve whatever a pipeline pushed, e.g.
  pipeline_outputs/<pipeline>/serving/<model>/<version>/. Symlinked folders are followed (a
  model folder linked into `root` serves under the link's name, from the link's path, so a
  re-pointed link is followed); `max_depth` ends a symlink loop, and one model folder reached
  by two paths under one name is served once, from the shallower.

  Args:
    root: the folder searched.
    max_depth: how many folders deep below `root` to look.
    broken_links: if a list, gets (link, absolute target) of each symlink met under `root` that
      points nowhere (skipped: it holds no model), for the caller to report.

  Raises:
    ValueError: when two model directories under `root` have the same name.
  """
  found = {}
  root = os.path.abspath(root)
  for directory, subdirs, files in os.walk(root, followlinks=True):
    if broken_links is not None:
      broken_links.extend(_broken_links(directory, files))
    depth = directory[len(root) :].count(os.sep)
    if depth >= max_depth:
      subdirs[:] = []
    if directory != root and any(is_version_name(d) for d in subdirs):
      name = os.path.basename(directory)
      if name in found and os.path.realpath(found[name]) != os.path.realpath(directory):
        raise ValueError(f'two models named "{name}" under {root}: {found[name]} and {directory}')
      # One folder reached by two paths (a link to it, or up the tree): the shallower serves.
      if name not in found or (directory.count(os.sep), directory) < (
        found[name].count(os.sep),
        found[name],
      ):
        found[name] = directory
      subdirs[:] = []
  return [ModelConfig(name, path) for name, path in sorted(found.items())]


def _broken_links(directory: str, files: list[str]) -> list[tuple[str, str]]:
  # os.walk lists a symlink to a missing folder among the files: (link, its absolute target).
  broken = []
  for name in files:
    link = os.path.join(directory, name)
    try:
      if os.path.islink(link) and not os.path.exists(link):
        broken.append((link, os.path.normpath(os.path.join(directory, os.readlink(link)))))
    except OSError:
      continue  # removed or replaced while listed: the next poll sees it as it is
  return broken
