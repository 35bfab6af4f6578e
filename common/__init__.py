"""What both implementations share: data, batches, the training loop, checks, report and plots."""
