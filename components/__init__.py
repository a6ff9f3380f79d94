"""Custom TFX components: text ExampleGen, the Beam-learned Vocabulary, the data gate."""

from components import beam_specs

beam_specs.install()
