"""User code that TFX loads by name: features, preprocessing, models, training, export."""
