"""ppsdg: federated training of an MNIST classifier over torch.distributed or vantage6."""
