"""Text and picture encoders: tokenization, prompts, pre/post-processing around one engine interface.

`base.InferenceEngine` is the seam: the in-process ONNX Runtime engine and the Triton engine implement
it, and tests swap engines, not mocks. Reads the export manifest for dims and preprocessing. May import
images (picture preprocessing), domain and platform.
"""
