"""A model server that speaks the TensorFlow Serving gRPC and REST APIs."""
