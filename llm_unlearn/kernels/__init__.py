"""Evaluation with a backend's own quantized layers instead of dequantized weights (`kernels/bnb.py`)."""
