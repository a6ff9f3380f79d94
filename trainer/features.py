"""Feature keys and reserved tokens: the one place every stage reads them from."""

# Raw features (ExampleGen output, the serving_default input).
TEXT_KEY = 'text'
LABEL_KEY = 'label'

# Transformed features (Transform output, the trainer's input).
TOKEN_IDS_KEY = 'token_ids'
TRANSFORMED_LABEL_KEY = 'label'

# Reserved tokens, in id order 0..4.
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
