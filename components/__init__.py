"""Custom TFX components: text ExampleGen, the Beam-learned Vocabulary, the data gate."""
