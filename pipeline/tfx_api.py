"""The names of TFX's public v1 API this project uses, spelled as `tfx.v1` spells them.

`from tfx import v1 as tfx` also imports `tfx.v1.extensions`: the Google Cloud AI Platform
components and their client library, about 2 s of every process that builds a pipeline (the
local runner, `tfx pipeline create`, the Kubeflow compile), none of which uses them unless it
trains on Vertex AI (pipeline/kubeflow_runner.py imports those modules there). Here each name
comes from the module `tfx.v1` takes it from: `tfx.dsl.Pipeline` below is `tfx.v1.dsl.Pipeline`
(tests/pipeline/test_tfx_api.py checks every name, and that no module imports `tfx.v1`).
"""

import types

from tfx.components import Evaluator, ExampleValidator, Pusher, StatisticsGen, Trainer
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.common.resolver import Resolver
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
  LatestBlessedModelStrategy,
)
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.metadata import sqlite_metadata_connection_config
from tfx.orchestration.pipeline import Pipeline
from tfx.proto.pusher_pb2 import PushDestination
from tfx.proto.trainer_pb2 import EvalArgs, TrainArgs
from tfx.types import standard_artifacts
from tfx.types.channel import Channel

_ns = types.SimpleNamespace

tfx = _ns(
  components=_ns(
    Evaluator=Evaluator,
    ExampleValidator=ExampleValidator,
    ImportSchemaGen=ImportSchemaGen,
    Pusher=Pusher,
    StatisticsGen=StatisticsGen,
    Trainer=Trainer,
  ),
  dsl=_ns(
    Channel=Channel,
    Importer=Importer,
    Pipeline=Pipeline,
    Resolver=Resolver,
    experimental=_ns(LatestBlessedModelStrategy=LatestBlessedModelStrategy),
  ),
  orchestration=_ns(
    LocalDagRunner=LocalDagRunner,
    metadata=_ns(sqlite_metadata_connection_config=sqlite_metadata_connection_config),
  ),
  proto=_ns(EvalArgs=EvalArgs, PushDestination=PushDestination, TrainArgs=TrainArgs),
  types=_ns(standard_artifacts=standard_artifacts),
)
