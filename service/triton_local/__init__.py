"""A real tritonserver (from nvidia-pytriton) on the CPU, for development and tests.

May import `service.domain` (the manifest) and `service.platform`; nothing above.
"""
