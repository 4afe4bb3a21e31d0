"""Video-LaVIT detokenizers for diffusers: motion condition encoder, 3D U-Net, keyframe decoder, pipelines."""

__version__ = "0.1.0"
