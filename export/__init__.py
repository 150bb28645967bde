"""Export Hugging Face checkpoints to ONNX Triton model entries (`python -m export --help`)."""
