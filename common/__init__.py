"""What both implementations train on: MNIST as tensors, and its minibatches (common.data)."""
