"""Typed options of model compression: how a model is quantized at export, and how a student is
distilled from a teacher (importable without TensorFlow, like trainer/config.py).

The pipeline passes them to a Trainer beside its TrainerConfig, as
`custom_config={'trainer': ..., 'export': ExportConfig(...).to_dict(), 'distill': ...}`.
"""

import dataclasses
from typing import Any

from tfxlm import contract, typed_config
from tfxlm.typed_config import FRACTION, POSITIVE, Range
from trainer.config import TrainerConfig

# Beside a Trainer's `Format-Serving` (quantized) export, the float model that `float_copy`
# keeps: neither evaluated nor pushed (both read Format-Serving), the distill stage's teacher.
FLOAT_COPY_DIR = 'Format-Float'


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """How the trained model is written for serving.

  Attributes:
    quantize: 'none' (float32), 'int8_weights' (int8 weights with one scale per output channel,
      float activations: about 0.28x the size at the float model's latency), 'int8' (weights and
      activations in int8) or 'int4' (int4 weights), with Keras' own quantizers
      (`Model.quantize`), applied after training and before export (trainer/quantization.py).
      The SavedModel keeps its signatures and needs only TensorFlow and tensorflow-text. A
      quantized export carries no float backbone weights, so it cannot be a warm start or a
      distillation teacher. classify models only.
    float_copy: With `quantize`, also export the float model to `Format-Float` beside the
      quantized `Format-Serving` (in the same model artifact), so that the run's `distill`
      stage can take it as its teacher. The pipeline sets it when a `distill` stage learns
      from a quantized `train` model; the Evaluator and the Pusher see only the quantized one.
  """

  quantize: str = contract.QUANTIZE_NONE
  float_copy: bool = False

  def __post_init__(self):
    typed_config.check_fields(self, choices={'quantize': contract.QUANTIZE_MODES})

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None, where: str = '') -> 'ExportConfig':
    return typed_config.from_dict(cls, d, where)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DistillConfig:
  """How the student learns from the teacher (trainer/distillation.py).

  Each training batch is the labeled examples with `augment_rate` of its rows replaced by
  augmented copies (Tang et al. 2019: tokens masked, tokens replaced, an n-gram sampled), drawn
  afresh at every step; the teacher labels every row in the training step. The transfer set is
  thus `train_steps x batch` distinct examples, far more than the labeled data. The loss is
  `soft_weight * T^2 * CE(teacher/T, student/T) + (1 - soft_weight) * CE(label, student)`, the
  hard part on unaugmented rows only (an augmented copy may no longer have its label).

  Attributes:
    temperature: T, the softmax temperature of both models' logits in the soft loss.
    soft_weight: Weight of the soft (teacher) loss; the hard-label loss gets 1 - soft_weight.
    augment_rate: Fraction of each batch's rows replaced by augmented copies.
    token_mask_rate: In an augmented copy, the chance that a token becomes the mask token.
    token_replace_rate: The chance that a token is replaced by a token of another row of the
      batch (so drawn by the data's token frequencies).
    ngram_rate: The chance that an augmented copy keeps only an n-gram of its tokens.
    ngram_max: The longest n-gram kept (its length is drawn from 1..ngram_max).
    init_embeddings: Start the student's token, position and segment embeddings from the
      teacher's, projected onto the student's width by a PCA of the teacher's token embeddings
      (trainer/distillation.py); the student must be no wider than the teacher (refused when
      the config loads if the teacher is the `train` stage or a local folder). The rest of the
      student starts at random.
  """

  temperature: float = 2.0
  soft_weight: float = 1.0
  augment_rate: float = 0.75
  token_mask_rate: float = 0.1
  token_replace_rate: float = 0.1
  ngram_rate: float = 0.25
  ngram_max: int = 5
  init_embeddings: bool = True

  def __post_init__(self):
    typed_config.check_fields(
      self,
      ranges={
        'temperature': POSITIVE,
        'soft_weight': FRACTION,
        'augment_rate': FRACTION,
        'token_mask_rate': FRACTION,
        'token_replace_rate': FRACTION,
        'ngram_rate': FRACTION,
        'ngram_max': Range(low=1),
      },
    )

  @classmethod
  def from_dict(cls, d: dict[str, Any] | None, where: str = '') -> 'DistillConfig':
    return typed_config.from_dict(cls, d, where)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class DistillStageConfig:
  """The pipeline's optional `distill` stage: after `train`, a student classifier learns from a
  teacher's soft labels on the same Transform output, then is evaluated, blessed and pushed
  under its own model name like any other model (pipeline/distill_stage.py).

  Attributes:
    student: The student's TrainerConfig (task classify, e.g. model_size tiny); its `seq_len`
      must be `train.seq_len` (both read the same Transform output).
    teacher: The teacher: empty means this run's `train` model (which must then be exported
      float, `export.quantize: none`); else a pushed float version folder of this pipeline
      (`<serving_root>/<model_name>/<version>`) or a Trainer's model artifact folder, trained on
      the same vocabulary.
    model_name: The student's name under the serving root (must differ from
      `serving.model_name`).
    options: Temperature, loss mix and the transfer set's augmentation rates.
  """

  student: TrainerConfig = TrainerConfig(task=contract.CLASSIFY, model_size='tiny')
  teacher: str = ''
  model_name: str = 'student'
  options: DistillConfig = DistillConfig()

  def __post_init__(self):
    typed_config.check_fields(self, names=('model_name',))
    if self.student.task != contract.CLASSIFY:
      raise typed_config.FieldError(
        'student', f'task must be {contract.CLASSIFY}, got {self.student.task}'
      )

  def trainer_custom_config(self) -> dict[str, Any]:
    """The distill Trainer's `custom_config`: the student's config and the options."""
    return {
      **self.student.trainer_custom_config(),
      contract.DISTILL_CONFIG_KEY: self.options.to_dict(),
    }
