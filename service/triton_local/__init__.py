"""A real tritonserver (from nvidia-pytriton) on the CPU, for development and tests."""
