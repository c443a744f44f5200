"""The TensorFlow (Keras 3) frontend: capture, schedule, optimize()."""
