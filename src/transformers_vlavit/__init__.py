"""Video-LaVIT for transformers: video decomposition, processor, tokenizers and the causal LM.

Importing this package registers the Video-LaVIT classes with the transformers Auto classes.
"""

__version__ = "0.1.0"
