"""Integrations with other libraries, each an optional extra that the core package never imports.

- :mod:`layerdrop.integrations.hf`: LayerDrop, keep lists and layer selection for Hugging Face transformers
  models (``pip install "layerdrop[hf]"``).
"""
