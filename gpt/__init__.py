"""GPT-2 in plain PyTorch: model, shards and loader, data preparation, training, evaluation."""
