"""CLIPSIM: mean cosine similarity between a video's frames and its prompt in CLIP space.

As in GODIVA / Make-A-Video / the Video-LaVIT paper's MSR-VTT number: every frame and the prompt are
embedded with a ``transformers.CLIPModel`` (the projected, l2-normalised image and text embeddings; the
prompt truncated to the model's 77 tokens) and the frame-text cosines are averaged over the frames, then over
the videos. The value is the raw cosine (0.3012 in the paper), not multiplied by 100.
"""

from __future__ import annotations

import os

import torch


def _embedding(output) -> torch.Tensor:
    """``get_*_features`` returns a tensor, or a model output whose pooled value is the embedding."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class ClipSimilarity:
    """Frame-text similarity with a CLIP model loaded from ``path`` (model, tokenizer, image processor).

    Args:
        path: a folder with a ``CLIPModel``, its tokenizer and image processor (e.g. a saved
            ``openai/clip-vit-base-patch32``).
        device: torch device.
        batch_size: frames per image-encoder call.
    """

    def __init__(self, path: str | os.PathLike, device: str = "cpu", batch_size: int = 32):
        from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

        self.model = CLIPModel.from_pretrained(path).to(device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.image_processor = AutoImageProcessor.from_pretrained(path)
        self.batch_size = batch_size
        self.max_length = self.model.config.text_config.max_position_embeddings

    @torch.no_grad()
    def __call__(self, frames: list, prompt: str) -> float:
        """Mean cosine of ``frames`` (PIL images or ``[3, H, W]`` arrays in [0, 255]) with ``prompt``."""
        device = self.model.device
        text = self.tokenizer(
            [prompt], truncation=True, max_length=self.max_length, padding=True, return_tensors="pt"
        ).to(device)
        text_embedding = _embedding(self.model.get_text_features(**text))
        text_embedding = text_embedding / text_embedding.norm(dim=-1, keepdim=True)
        cosines = []
        for start in range(0, len(frames), self.batch_size):
            pixels = self.image_processor(frames[start : start + self.batch_size], return_tensors="pt")
            image_embedding = _embedding(
                self.model.get_image_features(pixel_values=pixels["pixel_values"].to(device))
            )
            image_embedding = image_embedding / image_embedding.norm(dim=-1, keepdim=True)
            cosines.append(image_embedding @ text_embedding[0])
        return torch.cat(cosines).mean().item()
