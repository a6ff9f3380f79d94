"""Names that cross stages: the one place the pipeline, components, trainer, server, client,
benchmarks and tests read them from.

No TensorFlow import here (nor anything heavy): the server, the client and the config loader
import this module too. DESIGN.md in docs/ describes what these names mean; this module is where
the code reads them.
"""

# Raw features (ExampleGen output; `serving_default` parses them from serialized tf.Examples).
TEXT_KEY = 'text'
LABEL_KEY = 'label'

# Transformed features (Transform output, the Trainer's input).
TOKEN_IDS_KEY = 'token_ids'
TRANSFORMED_LABEL_KEY = 'label'

# Reserved tokens of a vocabulary the pipeline learns, in id order 0..4. A vocabulary imported
# from a pretrained preset keeps its own special tokens and ids.
PAD, UNK, CLS, SEP, MASK = '[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'
RESERVED_TOKENS = (PAD, UNK, CLS, SEP, MASK)
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(RESERVED_TOKENS))

# Names under which the transform graph carries its vocabularies as assets
# (`tft_output.vocabulary_file_by_name(...)`).
TOKEN_VOCAB_NAME = 'token_vocab'
LABEL_VOCAB_NAME = 'label_vocab'

# Tasks.
MLM, CLM, CLASSIFY = 'mlm', 'clm', 'classify'
TASKS = (MLM, CLM, CLASSIFY)

# Input formats ExampleGen reads.
CSV, TFRECORD, TEXT, JSONL = 'csv', 'tfrecord', 'text', 'jsonl'
INPUT_FORMATS = (CSV, TFRECORD, TEXT, JSONL)
# How `text` input is cut into documents: one per line, or one per file.
LINE_MODE, FILE_MODE = 'line', 'file'
TEXT_MODES = (LINE_MODE, FILE_MODE)

# Distribution strategies (trainer/distribute.py) and learning-rate decays.
AUTO, DEFAULT, MIRRORED, MULTI_WORKER, TPU = 'auto', 'default', 'mirrored', 'multi_worker', 'tpu'
STRATEGIES = (AUTO, DEFAULT, MIRRORED, MULTI_WORKER, TPU)
LINEAR, COSINE = 'linear', 'cosine'
DECAYS = (LINEAR, COSINE)

# SavedModel signatures of every exported model.
SERVING_DEFAULT = 'serving_default'
PREDICT_TEXT = 'predict_text'
TRANSFORM_FEATURES = 'transform_features'
GENERATE = 'generate'  # causal LMs only

# Signature inputs.
EXAMPLES_INPUT = 'examples'      # serving_default, transform_features: serialized tf.Example [b]
TEXT_INPUT = 'text'              # predict_text: string [b]
PROMPT_INPUT = 'prompt'          # generate, each [b]:
MAX_NEW_TOKENS_INPUT = 'max_new_tokens'
TEMPERATURE_INPUT = 'temperature'
TOP_K_INPUT = 'top_k'
TOP_P_INPUT = 'top_p'
SEED_INPUT = 'seed'

# Signature outputs.
PROBABILITIES = 'probabilities'          # classify: float32 [b, classes]
LABEL_IDS = 'label_ids'                  # classify: int64 [b]
LABELS = 'labels'                        # classify: string [b]
MASK_PREDICTIONS = 'mask_predictions'    # mlm: string [b, k]
MASK_SCORES = 'mask_scores'              # mlm: float32 [b, k]
TOKEN_LOGPROB_SUM = 'token_logprob_sum'  # mlm, clm: float32 [b]
TOKEN_COUNT = 'token_count'              # mlm, clm: float32 [b]
GENERATED_TEXT = 'text'                  # generate: string [b]

# custom_config keys: the Trainer's (`{TRAINER_CONFIG_KEY: TrainerConfig.to_dict()}`) and the
# Transform's, which is built from the same TrainerConfig.
TRAINER_CONFIG_KEY = 'trainer'
VOCAB_URI_KEY = 'vocab_uri'
TASK_KEY = 'task'
SEQ_LEN_KEY = 'seq_len'

# Files inside an exported model and a run's outputs.
EXTRA_DIR = 'assets.extra'  # TF Serving ignores it
TRAINER_CONFIG_FILE = 'trainer_config.json'
BACKBONE_WEIGHTS_FILE = 'backbone_weights.npz'
WARMUP_FILE = 'tf_serving_warmup_requests'
REPORT_FILE = 'report.html'

# The Trainer's user code, by dotted path so the Kubeflow image can import it.
RUN_FN = 'trainer.task.run_fn'

# Default ports, those of tensorflow_model_server.
GRPC_PORT = 8500
REST_PORT = 8501
