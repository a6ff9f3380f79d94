"""The error every data problem is reported as; TensorFlow-free, so readers can raise it."""


class DataError(ValueError):
  """Input data is unusable; the message names the file or feature and the problem."""
