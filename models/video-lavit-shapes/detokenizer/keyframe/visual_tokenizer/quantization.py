"""Code-space pieces shared by the motion and the visual tokenizer.

Both tokenizers project their features with a Linear-Tanh-Linear head, l2-normalise the result and
snap it to the nearest row of an l2-normalised codebook (LaVIT's vector quantiser). This flat module is
imported relatively by both modeling files, so `save_pretrained` copies it along as remote code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import initialization as init


class TanhProjection(nn.Module):
    """Linear-Tanh-Linear head: `[..., in_features] -> [..., out_features]` (hidden width `in_features`)."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.fc1 = nn.Linear(in_features, in_features)
        self.fc2 = nn.Linear(in_features, out_features)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """Project the last axis: `[..., in_features] -> [..., out_features]`."""
        return self.fc2(torch.tanh(self.fc1(hidden_states)))


def nearest_code_ids(latents: torch.Tensor, codebook: torch.Tensor) -> torch.LongTensor:
    """
    Ids of the codebook rows nearest (euclidean) to each latent.

    Args:
        latents (`torch.Tensor` of shape `[..., code_dim]`): l2-normalised latents.
        codebook (`torch.Tensor` of shape `[codebook_size, code_dim]`): the code vectors.

    Returns:
        `torch.LongTensor` of shape `[...]`: 0-based code ids.
    """
    # float32 so that half-precision rounding does not flip close calls; |latent|^2 is the same for
    # every code of one latent, so it is left out of the distance
    codebook = codebook.float()
    distances = codebook.pow(2).sum(dim=-1) - 2.0 * latents.float() @ codebook.T
    return distances.argmin(dim=-1)


def init_unit_codebook_(weight: torch.Tensor) -> None:
    """Fill a codebook `[codebook_size, code_dim]` in place with random unit vectors (skips loaded weights)."""
    init.normal_(weight)
    init.copy_(weight, F.normalize(weight, dim=-1))


__all__ = ["TanhProjection", "init_unit_codebook_", "nearest_code_ids"]
