"""Names that cross stages: the one place the pipeline, components, trainer, server, client,
benchmarks and tests read them from.

No TensorFlow import here (nor anything heavy): the server, the client and the config loader
import this module too. docs/design.md describes what these names mean; this module is where
the code reads them.
"""

# Raw features (ExampleGen output; `serving_default` parses them from serialized tf.Examples).
TEXT_KEY = 'text'
LABEL_KEY = 'label'

# Transformed features (Transform output, the Trainer's input). A classify Transform that also
# serves the pretraining stage (same examples, same vocabulary) adds the LM pieces under their own
# key, since its `token_ids` are framed.
TOKEN_IDS_KEY = 'token_ids'
TRANSFORMED_LABEL_KEY = 'label'
LM_TOKEN_IDS_KEY = 'lm_token_ids'

# Reserved tokens of a vocabulary the pipeline learns, in id order 0..4. A vocabulary imported
# from a pretrained preset keeps its own special tokens and ids.
PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
RESERVED_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(RESERVED_TOKENS))

# Names under which the transform graph carries its vocabularies as assets
# (`tft_output.vocabulary_file_by_name(...)`).
TOKEN_VOCAB_NAME = 'token_vocab'
LABEL_VOCAB_NAME = 'label_vocab'
TOKENIZER_SPEC_NAME = 'tokenizer_spec'  # vocab.json: which ids are special

# Tasks.
MLM, CLM, CLASSIFY = 'mlm', 'clm', 'classify'
TASKS = (MLM, CLM, CLASSIFY)

# The keras-hub backbone class of each task (built from a size, or fine-tuned from a preset
# `train.preset`), and the file of a keras-hub preset that names its backbone class.
TASK_BACKBONES = {MLM: 'BertBackbone', CLASSIFY: 'BertBackbone', CLM: 'GPT2Backbone'}
PRESET_CONFIG_FILE = 'config.json'

# Input formats ExampleGen reads, and how `text` input splits into documents.
CSV, TFRECORD, TEXT, JSONL = 'csv', 'tfrecord', 'text', 'jsonl'
INPUT_FORMATS = (CSV, TFRECORD, TEXT, JSONL)
LINE, FILE = 'line', 'file'
TEXT_MODES = (LINE, FILE)

# Compression of the intermediate TFRecord files ExampleGen and Transform write
# (`beam.intermediate_compression`; AUTO: none for local runs, gzip on Kubeflow). Each Examples
# artifact records it in a custom property; readers decide by file name: gzip files, and only
# those, end in GZIP_SUFFIX (as Beam's and tfx_bsl's readers assume).
NO_COMPRESSION, GZIP = 'none', 'gzip'
TFRECORD_COMPRESSIONS = (NO_COMPRESSION, GZIP)
TFRECORD_COMPRESSION_PROPERTY = 'tfrecord_compression'
# On ExampleGen's Examples: the input files read, JSON {"count": n, "files": [first names]}, the
# names relative to data.input_base (components.file_selection.recorded).
INPUT_FILES_PROPERTY = 'input_files'
GZIP_SUFFIX = '.gz'

# Vocabulary artifact: its tokenizer kinds and files (written by the Vocabulary component, read
# by Transform's preprocessing_fn and the export; trainer/tokenizers.py owns every kind). Learned
# by the pipeline (VOCAB_KINDS, the `vocabulary.kind` choices), or imported from a keras-hub
# preset.
WORDPIECE, SENTENCEPIECE = 'wordpiece', 'sentencepiece'
VOCAB_KINDS = (WORDPIECE, SENTENCEPIECE)
PRESET_WORDPIECE, PRESET_BPE, PRESET_SENTENCEPIECE = (
  'preset_wordpiece',
  'preset_bpe',
  'preset_sentencepiece',
)
PRESET_KINDS = (PRESET_WORDPIECE, PRESET_BPE, PRESET_SENTENCEPIECE)
# A Hugging Face BERT checkpoint's WordPiece tokenizer (its tokenizer.json or vocab.txt), run in
# the graph with the Hugging Face normalization (trainer/hf_tokenizer.py).
HF_WORDPIECE = 'hf_wordpiece'
IMPORTED_KINDS = PRESET_KINDS + (HF_WORDPIECE,)
TOKENIZER_KINDS = VOCAB_KINDS + IMPORTED_KINDS
VOCAB_FILE = 'vocab.txt'  # one token per line, id = line number
VOCAB_JSON = 'vocab.json'  # kind, special token ids, normalization flags, counts
SPM_MODEL_FILE = 'spm.model'  # learned sentencepiece only
SUFFIX_INDICATOR = '##'  # wordpiece continuation prefix
PRESET_TOKENIZER_FILE = 'keras_hub_tokenizer.json'  # preset kinds: keras-hub's tokenizer config
PRESET_ASSETS_DIR = 'keras_hub_assets'  # preset kinds: its vocabulary / merges / model

# Distribution strategies (trainer/distribute.py), learning-rate decays, precisions.
AUTO, DEFAULT, MIRRORED, MULTI_WORKER, TPU = 'auto', 'default', 'mirrored', 'multi_worker', 'tpu'
STRATEGIES = (AUTO, DEFAULT, MIRRORED, MULTI_WORKER, TPU)
LINEAR, COSINE = 'linear', 'cosine'
# How the classify head pools the backbone's outputs (trainer/models.py).
CLS_POOLING, MEAN_POOLING = 'cls', 'mean'
POOLINGS = (CLS_POOLING, MEAN_POOLING)
DECAYS = (LINEAR, COSINE)
FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16 = 'float32', 'mixed_bfloat16', 'mixed_float16'
# `auto`: chosen on the host that trains, from its hardware (trainer/precision.py).
PRECISIONS = (AUTO, FLOAT32, MIXED_BFLOAT16, MIXED_FLOAT16)

# Pipeline component ids (folders under the pipeline root, node names in ML Metadata and KFP).
# The factory's ExampleGen (components/example_gen.py, every input format) keeps its class name.
EXAMPLE_GEN_ID = 'TextExampleGen'
STATISTICS_GEN_ID = 'StatisticsGen'
SCHEMA_GEN_ID = 'ImportSchemaGen'
EXAMPLE_VALIDATOR_ID = 'ExampleValidator'
VOCABULARY_ID = 'Vocabulary'
# With data.label_values and a pretrain stage: every row's text, unlabeled, and its schema.
CORPUS_EXAMPLE_GEN_ID = 'CorpusExampleGen'
CORPUS_SCHEMA_GEN_ID = 'CorpusSchemaGen'
# Only when pretraining reads that corpus: otherwise TRANSFORM_ID serves both stages.
PRETRAIN_TRANSFORM_ID = 'PretrainTransform'
PRETRAIN_TRAINER_ID = 'PretrainTrainer'
BASE_MODEL_IMPORTER_ID = 'BaseModelImporter'
# create_transform_pipeline's: a vocabulary folder learned elsewhere, in place of VOCABULARY_ID.
VOCABULARY_IMPORTER_ID = 'VocabularyImporter'
TRANSFORM_ID = 'Transform'
TRAINER_ID = 'Trainer'  # the `train` stage's: the model the run evaluates, pushes and reports
# The Trainers of the pretrain and train stages (on Kubeflow, the tasks that get accelerators).
TRAINER_IDS = (PRETRAIN_TRAINER_ID, TRAINER_ID)
BASELINE_RESOLVER_ID = 'LatestBlessedModelResolver'
EVALUATOR_ID = 'Evaluator'
PUSHER_ID = 'Pusher'
# The `distill` stage (trainer/distillation.py): a student trained on the teacher's soft labels,
# evaluated, blessed and pushed under its own model name.
TEACHER_IMPORTER_ID = 'TeacherImporter'
DISTILL_TRAINER_ID = 'DistillTrainer'
DISTILL_RESOLVER_ID = 'DistillBaselineResolver'
DISTILL_EVALUATOR_ID = 'DistillEvaluator'
DISTILL_PUSHER_ID = 'DistillPusher'

# SavedModel signatures of every exported model.
SERVING_DEFAULT = 'serving_default'
PREDICT_TEXT = 'predict_text'
TRANSFORM_FEATURES = 'transform_features'
GENERATE = 'generate'  # causal LMs only
# classify only: TF Serving's classification signature (method_name tensorflow/serving/classify),
# which its Classify API and MultiInference's classify tasks require.
CLASSIFICATION = 'classification'
CLASSIFY_METHOD = 'tensorflow/serving/classify'

# Signature inputs.
EXAMPLES_INPUT = 'examples'  # serving_default, transform_features: serialized tf.Example [b]
TEXT_INPUT = 'text'  # predict_text: string [b]
PROMPT_INPUT = 'prompt'  # generate, each [b]:
MAX_NEW_TOKENS_INPUT = 'max_new_tokens'
TEMPERATURE_INPUT = 'temperature'
TOP_K_INPUT = 'top_k'
TOP_P_INPUT = 'top_p'
SEED_INPUT = 'seed'
CLASSIFY_INPUTS = 'inputs'  # classification: serialized tf.Example [b] (TF Serving's key)

# Signature outputs.
PROBABILITIES = 'probabilities'  # classify: float32 [b, classes]
LABEL_IDS = 'label_ids'  # classify: int64 [b]
LABELS = 'labels'  # classify: string [b]
MASK_PREDICTIONS = 'mask_predictions'  # mlm: string [b, k]
MASK_SCORES = 'mask_scores'  # mlm: float32 [b, k]
TOKEN_LOGPROB_SUM = 'token_logprob_sum'  # mlm, clm: float32 [b]
TOKEN_COUNT = 'token_count'  # mlm, clm: float32 [b]
GENERATED_TEXT = 'text'  # generate: string [b]
CLASSES = 'classes'  # classification: string [b, classes], the label vocabulary on every row
SCORES = 'scores'  # classification: float32 [b, classes], the probabilities

# custom_config keys: the Trainer's (`{TRAINER_CONFIG_KEY: TrainerConfig.to_dict()}`) and the
# Transform's, which is built from the same TrainerConfig.
TRAINER_CONFIG_KEY = 'trainer'
VOCAB_URI_KEY = 'vocab_uri'
TASK_KEY = 'task'
SEQ_LEN_KEY = 'seq_len'
LM_FEATURES_KEY = 'lm_features'  # classify Transform: also output LM_TOKEN_IDS_KEY
# Beside TRAINER_CONFIG_KEY in a Trainer's custom_config: the export's options
# (`ExportConfig.to_dict()`) and, for the distill stage, its options (`DistillConfig`).
EXPORT_CONFIG_KEY = 'export'
DISTILL_CONFIG_KEY = 'distill'
# Beside TRAINER_CONFIG_KEY, with a local `preset` folder: its fingerprint
# (tfxlm/checkpoint_fingerprint.py), so that TFX's cache re-runs the stage when the files change.
# The Vocabulary component's exec property of the same name carries its tokenizer's.
PRESET_FINGERPRINT_KEY = 'preset_fingerprint'
# Beside TRAINER_CONFIG_KEY, with a local `base_model` or `distill.teacher` folder (imported with
# reimport=False, so the same artifact while its path is the same): that folder's fingerprint.
BASE_MODEL_FINGERPRINT_KEY = 'base_model_fingerprint'

# Quantization of an exported model (`export.quantize`, trainer/quantization.py): none, Keras'
# int8 with float activations (weight-only), int8 weights and activations, int4 weights.
QUANTIZE_NONE, INT8_WEIGHTS, INT8, INT4 = 'none', 'int8_weights', 'int8', 'int4'
QUANTIZE_MODES = (QUANTIZE_NONE, INT8_WEIGHTS, INT8, INT4)

# Files inside an exported model and a run's outputs.
SERVING_MODEL_DIR = 'Format-Serving'  # TFX: the SavedModel's folder inside a Model artifact
EXTRA_DIR = 'assets.extra'  # TF Serving ignores it
TRAINER_CONFIG_FILE = 'trainer_config.json'
# Inside EXTRA_DIR: the trained backbone (+ tokenizer) as a keras-hub preset, for `from_preset`;
# the one copy of the backbone weights beside the SavedModel, which warm starts and the distill
# stage's teacher loader read.
PRESET_DIR = 'keras_hub_preset'
# Inside PRESET_DIR, for a model fine-tuned from a Hugging Face BERT checkpoint: that
# checkpoint's tokenizer files (tokenizer.json, vocab.txt, ...), which the model was trained
# with (kind hf_wordpiece); keras-hub's BertTokenizer of the preset normalizes some text otherwise.
PRESET_HF_TOKENIZER_DIR = 'hf_tokenizer'
WARMUP_FILE = 'tf_serving_warmup_requests'
EXPORT_CONFIG_FILE = 'export_config.json'  # inside EXTRA_DIR: how the model was quantized
REPORT_FILE = 'report.html'
SUMMARY_FILE = 'summary.json'  # beside REPORT_FILE: the run's figures (pipeline/summary.py)
# In a Trainer's model_run dir: the checkpoint folder it trained in and the step it resumed from,
# so the run's curves can take in those of the executions before (pipeline/summary.py).
CHECKPOINTS_RECORD_FILE = 'checkpoints.json'

# Defaults that a config field and a component argument share (pipeline/config.py,
# components/): the learned vocabulary's size, ExampleGen's (train, eval) hash buckets, and the
# most new tokens a `generate` call may ask for.
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_TRAIN_EVAL_RATIO = (9, 1)
DEFAULT_MAX_NEW_TOKENS_LIMIT = 256

# User code TFX loads, by dotted path so the Kubeflow image can import it.
RUN_FN = 'trainer.task.run_fn'
DISTILL_RUN_FN = 'trainer.distillation.run_fn'
PREPROCESSING_FN = 'trainer.preprocessing.preprocessing_fn'

# Default ports, those of tensorflow_model_server.
GRPC_PORT = 8500
REST_PORT = 8501
# Where REST serves the Prometheus metrics unless --monitoring_config_file says otherwise (TF
# Serving's default path), and its health check.
METRICS_PATH = '/monitoring/prometheus/metrics'
HEALTH_PATH = '/healthz'
