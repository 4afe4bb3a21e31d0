"""Stage-1 training of LaVIT's dynamic visual tokenizer (the objective the original authors never released).

LaVIT (arXiv 2309.04669, section 3.1) trains the tokenizer with the vision transformer frozen: the token
predictor decides per patch whether to keep it (a Gumbel-softmax decision with a straight-through estimator
during training), the token merger folds the dropped patches into the kept ones, the kept tokens are quantised
to a codebook, and a decoder reconstructs the frozen ViT's features of *every* patch from the quantised kept
tokens alone. The losses are

* reconstruction: ``1 - cosine(decoded, vit_features)`` averaged over all patches;
* commitment ``beta * |z - sg(q)|^2`` and codebook ``|sg(z) - q|^2`` on the kept tokens (z: l2-normalised
  projection of a merged token, q: its nearest code);
* keep ratio: ``(mean keep decision of an image - target ratio)^2`` averaged over images, which steers how many
  tokens an image gets.

:class:`VideoLaVITFeatureDecoder` is the training-only reconstruction head: learned per-patch queries attend to
the quantised kept tokens (keys weighted by the soft keep decision, so gradients reach the token predictor),
then to each other. It carries no position information about the kept tokens: as for the keyframe
detokenizer, which also receives codes without positions, the codes themselves must say where they are.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from transformers.utils import ModelOutput

from .modeling_visual_tokenizer import KEEP_INDEX, VideoLaVITVisualTokenizer, policy_weighted_attention

FEATURE_DECODER_WEIGHTS = "feature_decoder.safetensors"
FEATURE_DECODER_CONFIG = "feature_decoder.json"


@dataclass(frozen=True)
class FeatureDecoderConfig:
    """Sizes of :class:`VideoLaVITFeatureDecoder`.

    Attributes:
        code_dim: dimension of the codes it reads (the tokenizer's ``code_dim``).
        num_patches: patches per image, i.e. queries (the tokenizer's ``num_patches``).
        feature_size: width of the features it reconstructs (the tokenizer's ``hidden_size``).
        hidden_size: its own width.
        num_layers: blocks of cross-attention, self-attention and MLP.
        num_attention_heads: heads of both attentions.
        mlp_ratio: MLP width relative to ``hidden_size``.
    """

    code_dim: int
    num_patches: int
    feature_size: int
    hidden_size: int = 256
    num_layers: int = 4
    num_attention_heads: int = 4
    mlp_ratio: float = 4.0

    @classmethod
    def for_tokenizer(cls, tokenizer: VideoLaVITVisualTokenizer, **sizes) -> "FeatureDecoderConfig":
        """The decoder config matching a tokenizer's code dimension, patch count and ViT width."""
        config = tokenizer.config
        return cls(config.code_dim, config.num_patches, config.hidden_size, **sizes)


class _DecoderBlock(nn.Module):
    """Pre-norm block: cross-attention to the weighted codes, self-attention among queries (SDPA), MLP."""

    def __init__(self, config: FeatureDecoderConfig):
        super().__init__()
        width = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.cross_norm = nn.LayerNorm(width)
        self.cross_q = nn.Linear(width, width)
        self.cross_kv = nn.Linear(width, 2 * width)
        self.cross_out = nn.Linear(width, width)
        self.self_norm = nn.LayerNorm(width)
        self.self_qkv = nn.Linear(width, 3 * width)
        self.self_out = nn.Linear(width, width)
        self.mlp_norm = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, int(width * config.mlp_ratio)), nn.GELU(), nn.Linear(int(width * config.mlp_ratio), width)
        )

    def _heads(self, states: torch.Tensor) -> torch.Tensor:
        batch, length, _ = states.shape
        return states.view(batch, length, self.num_heads, -1).transpose(1, 2)

    def forward(self, queries: torch.Tensor, codes: torch.Tensor, code_weights: torch.Tensor) -> torch.Tensor:
        """`queries [B, N, W]`, `codes [B, N, W]`, `code_weights [B, N]` (soft keep) -> `[B, N, W]`."""
        batch, length, width = queries.shape
        query = self._heads(self.cross_q(self.cross_norm(queries)))
        key, value = (self._heads(part) for part in self.cross_kv(codes).chunk(2, dim=-1))
        attended = policy_weighted_attention(query, key, value, code_weights[:, None, None, :], eps=1e-6)
        queries = queries + self.cross_out(attended.transpose(1, 2).reshape(batch, length, width))
        q, k, v = (self._heads(part) for part in self.self_qkv(self.self_norm(queries)).chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v)
        queries = queries + self.self_out(attended.transpose(1, 2).reshape(batch, length, width))
        return queries + self.mlp(self.mlp_norm(queries))


class VideoLaVITFeatureDecoder(nn.Module):
    """Training-only head: quantised kept tokens -> reconstructed ViT features of every patch.

    Input: `codes [batch, num_patches, code_dim]` (the straight-through quantised code of every position;
    only kept positions matter) and `keep [batch, num_patches]` (soft or hard keep decision).
    Output: `[batch, num_patches, feature_size]`.
    """

    def __init__(self, config: FeatureDecoderConfig):
        super().__init__()
        self.config = config
        self.code_in = nn.Linear(config.code_dim, config.hidden_size)
        self.queries = nn.Parameter(torch.randn(config.num_patches, config.hidden_size) * 0.02)
        self.blocks = nn.ModuleList([_DecoderBlock(config) for _ in range(config.num_layers)])
        self.norm = nn.LayerNorm(config.hidden_size)
        self.out = nn.Linear(config.hidden_size, config.feature_size)

    def forward(self, codes: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """See the class docstring for shapes."""
        codes = self.code_in(codes)
        queries = self.queries.unsqueeze(0).expand(codes.shape[0], -1, -1)
        for block in self.blocks:
            queries = block(queries, codes, keep)
        return self.out(self.norm(queries))

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """Write `feature_decoder.safetensors` and `feature_decoder.json` into `folder`."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(folder / FEATURE_DECODER_WEIGHTS))
        (folder / FEATURE_DECODER_CONFIG).write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike) -> "VideoLaVITFeatureDecoder":
        """Load a decoder written by :meth:`save_pretrained`."""
        folder = Path(folder)
        decoder = cls(FeatureDecoderConfig(**json.loads((folder / FEATURE_DECODER_CONFIG).read_text())))
        decoder.load_state_dict(load_file(str(folder / FEATURE_DECODER_WEIGHTS)))
        return decoder


@dataclass
class VisualTokenizerTrainingOutput(ModelOutput):
    """Losses and statistics of one training step (scalars unless noted).

    Args:
        loss: weighted sum of the four losses.
        reconstruction_loss: mean `1 - cosine` between decoded and ViT features (or the squared error to
            the standardised features, see `reconstruction_target`).
        commitment_loss, codebook_loss: VQ losses over kept tokens.
        keep_ratio_loss: squared distance of each image's keep ratio to the target, averaged.
        keep_ratio: mean fraction of kept patches.
        argmax_keep_ratio: the fraction the arg-max decision (inference) would keep.
        code_ids (`[num_kept]`): codes of the kept tokens.
        latents (`[num_kept, code_dim]`): their l2-normalised latents (detached), for dead-code restarts.
        code_counts (`[codebook_size]`): usage of each code in this batch.
        perplexity: `exp(entropy)` of the batch's code distribution.
    """

    loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    codebook_loss: torch.Tensor | None = None
    keep_ratio_loss: torch.Tensor | None = None
    keep_ratio: torch.Tensor | None = None
    argmax_keep_ratio: torch.Tensor | None = None
    code_ids: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    code_counts: torch.Tensor | None = None
    perplexity: torch.Tensor | None = None


def visual_tokenizer_training_step(
    tokenizer: VideoLaVITVisualTokenizer,
    decoder: VideoLaVITFeatureDecoder,
    pixel_values: torch.Tensor,
    *,
    target_keep_ratio: float = 0.5,
    commitment_cost: float = 0.25,
    keep_ratio_weight: float = 2.0,
    reconstruction_target: str = "cosine",
    decision_entropy_weight: float = 0.0,
    sample: bool = True,
    generator: torch.Generator | None = None,
) -> VisualTokenizerTrainingOutput:
    """The stage-1 losses of a batch (see the module docstring); call `.loss.backward()` on the result.

    Args:
        tokenizer: the visual tokenizer; its vision transformer is run without gradients (frozen).
        decoder: the feature decoder head.
        pixel_values: `[batch, 3, image_size, image_size]` CLIP-normalised images.
        target_keep_ratio: fraction of patches the keep-ratio loss steers towards.
        commitment_cost: weight of the commitment loss.
        keep_ratio_weight: weight of the keep-ratio loss.
        reconstruction_target: ``"cosine"`` (LaVIT: ``1 - cosine`` to the ViT features) or ``"standardized"``:
            mean squared error to the features minus their batch mean at each patch position, divided by each
            channel's standard deviation (a small random ViT's features are dominated by what every image
            shares, its position embeddings, which the cosine target rewards reproducing; the standardised
            target leaves only what differs between images).
        decision_entropy_weight: weight of the mean binary entropy of the keep probabilities. The keep-ratio
            loss is met as well by every patch at probability ``target_keep_ratio`` as by a confident choice;
            at inference the arg-max then drops every patch. This term asks for confident decisions, so that
            the arg-max keeps about the trained share.
        sample: Gumbel-sample the keep decisions (training); `False` takes the arg-max (evaluation).
        generator: random generator of the Gumbel noise.
    """
    with torch.no_grad():
        vit_features = tokenizer.vision_model(pixel_values)
    keep_logprobs = tokenizer.token_predictor(vit_features)
    keep = tokenizer.select_tokens(keep_logprobs, sample=sample, generator=generator)
    merged = tokenizer.token_merger(vit_features, keep)
    latents = F.normalize(tokenizer.code_projection(merged), dim=-1)  # [B, N, code_dim]
    codebook = tokenizer.codebook.weight
    ids = tokenizer.codebook.nearest(latents.detach().flatten(0, 1)).view(latents.shape[:2])
    codes = F.embedding(ids, codebook).to(latents.dtype)
    quantized = latents + (codes - latents).detach()
    decoded = decoder(quantized, keep)

    if reconstruction_target == "cosine":
        reconstruction_loss = (1.0 - F.cosine_similarity(decoded.float(), vit_features.float(), dim=-1)).mean()
    elif reconstruction_target == "standardized":
        target = vit_features.float() - vit_features.float().mean(dim=0, keepdim=True)
        target = target / target.flatten(0, 1).std(dim=0).clamp_min(1e-6)
        reconstruction_loss = (decoded.float() - target).pow(2).mean()
    else:
        raise ValueError(f"reconstruction_target must be 'cosine' or 'standardized', not {reconstruction_target!r}")
    kept = keep.detach() > 0.5
    kept_count = kept.sum().clamp_min(1)
    squared = (latents.float() - codes.float()).pow(2).sum(dim=-1)  # [B, N]
    commitment_loss = commitment_cost * (squared * kept).sum() / kept_count
    codebook_loss = ((latents.detach().float() - codes.float()).pow(2).sum(dim=-1) * kept).sum() / kept_count
    keep_ratio = keep.mean(dim=-1)
    keep_ratio_loss = (keep_ratio - target_keep_ratio).pow(2).mean()
    loss = reconstruction_loss + commitment_loss + codebook_loss + keep_ratio_weight * keep_ratio_loss
    if decision_entropy_weight:
        keep_probability = keep_logprobs[..., KEEP_INDEX].float().exp().clamp(1e-6, 1 - 1e-6)
        decision_entropy = -(
            keep_probability * keep_probability.log() + (1 - keep_probability) * (1 - keep_probability).log()
        ).mean()
        loss = loss + decision_entropy_weight * decision_entropy

    kept_ids = ids[kept]
    counts = torch.bincount(kept_ids, minlength=codebook.shape[0])
    probabilities = counts.float() / counts.sum().clamp_min(1)
    perplexity = torch.exp(-(probabilities * probabilities.clamp_min(1e-10).log()).sum())
    return VisualTokenizerTrainingOutput(
        loss=loss,
        reconstruction_loss=reconstruction_loss,
        commitment_loss=commitment_loss,
        codebook_loss=codebook_loss,
        keep_ratio_loss=keep_ratio_loss,
        keep_ratio=keep_ratio.mean().detach(),
        argmax_keep_ratio=(keep_logprobs.detach().argmax(dim=-1) == KEEP_INDEX).float().mean(),
        code_ids=kept_ids,
        latents=latents.detach()[kept],
        code_counts=counts,
        perplexity=perplexity,
    )


@torch.no_grad()
def normalize_codebook_(tokenizer: VideoLaVITVisualTokenizer) -> None:
    """Project the codebook rows back onto the unit sphere (after an optimizer step moved them)."""
    weight = tokenizer.codebook.weight
    weight.copy_(F.normalize(weight.float(), dim=-1).to(weight.dtype))


@torch.no_grad()
def restart_dead_visual_codes(
    tokenizer: VideoLaVITVisualTokenizer,
    latents: torch.Tensor,
    code_counts: torch.Tensor,
    min_count: int = 1,
    generator: torch.Generator | None = None,
) -> torch.LongTensor:
    """Re-seed codes used fewer than `min_count` times with random recent latents.

    Args:
        tokenizer: its codebook is changed in place.
        latents: `[M, code_dim]` l2-normalised latents of recent kept tokens.
        code_counts: `[codebook_size]` usage since the last restart.
        min_count: threshold of a dead code.
        generator: random generator choosing the latents.

    Returns:
        `[num_restarted]` ids of the restarted codes (empty when none, or when there are no latents).
    """
    dead = torch.nonzero(code_counts.to(latents.device) < min_count).flatten()
    if dead.numel() == 0 or latents.shape[0] == 0:
        return dead[:0]
    choice = torch.randint(latents.shape[0], (dead.numel(),), generator=generator, device=latents.device)
    weight = tokenizer.codebook.weight
    weight[dead.to(weight.device)] = F.normalize(latents[choice].float(), dim=-1).to(weight.dtype)
    return dead



@torch.no_grad()
def fit_projection_to_code_embeddings(
    tokenizer: VideoLaVITVisualTokenizer,
    code_embeddings: torch.Tensor,
    pixel_values: torch.Tensor,
    *,
    ridge: float = 1e-3,
    batch_size: int = 32,
) -> dict[str, float]:
    """Set `vit_proj` to the least-squares map from merged kept tokens to the embeddings of their own codes.

    Pre-training shows the language model keyframes only as discrete codes; understanding feeds it
    `vit_proj` of the continuous merged tokens instead. Fitting `vit_proj` so that each continuous token lands
    on the input embedding of the code it quantises to (ridge regression, closed form) lets instruction
    tuning start from inputs the language model already reads, the role of LLaVA's projector-alignment stage.

    Args:
        tokenizer: the visual tokenizer; its `vit_proj` weight and bias are replaced in place.
        code_embeddings: `[codebook_size, llm_hidden_size]` the language model's input-embedding rows of the
            visual codes (vocabulary ids `visual_token_offset + code`).
        pixel_values: `[num_images, 3, image_size, image_size]` CLIP-normalised images to fit on.
        ridge: ridge penalty (> 0) relative to the mean diagonal of ``X^T X`` (the bias is not penalised).
        batch_size: images per tokenizer forward.

    Returns:
        `{"tokens": M, "relative_error": |XW - Y|^2 / |Y - mean(Y)|^2, "code_accuracy": share of tokens whose
        projection is nearest (cosine) to its own code's embedding among the codes used}`.
    """
    if ridge <= 0:
        # a final LayerNorm puts the merged tokens on a hyperplane: without a penalty X^T X can be singular
        raise ValueError(f"ridge must be positive, not {ridge}")
    merged_tokens, code_ids = [], []
    for start in range(0, pixel_values.shape[0], batch_size):
        batch = pixel_values[start : start + batch_size].to(tokenizer.device, tokenizer.dtype)
        _, _, keep, merged = tokenizer._merge(batch, sample=False, generator=None)
        kept = merged[keep > 0.5].float()
        merged_tokens.append(kept)
        code_ids.append(tokenizer.quantize(kept.to(tokenizer.dtype)))
    inputs, ids = torch.cat(merged_tokens), torch.cat(code_ids)
    targets = code_embeddings.to(inputs.device).float()[ids]
    # float64: the merged tokens come out of a LayerNorm, so with the bias column the design is nearly rank
    # deficient (condition ~1e7) and float32 normal equations would lose the solution at small ridges
    design = torch.cat([inputs, torch.ones_like(inputs[:, :1])], dim=1).double()  # [M, hidden + 1]
    gram = design.T @ design
    # lambda = ridge * (mean diagonal of X^T X): scale-free; the bias row/column is not penalised
    penalty = ridge * torch.diagonal(gram)[:-1].mean() * torch.eye(
        gram.shape[0], device=gram.device, dtype=gram.dtype
    )
    penalty[-1, -1] = 0.0
    solution = torch.linalg.solve(gram + penalty, design.T @ targets.double())
    projection = tokenizer.vit_proj
    projection.weight.copy_(solution[:-1].T.to(projection.weight.dtype))
    projection.bias.copy_(solution[-1].to(projection.bias.dtype))
    fitted = (design @ solution).float()
    used = torch.unique(ids)
    similarity = F.normalize(fitted, dim=-1) @ F.normalize(code_embeddings.to(inputs.device).float()[used], dim=-1).T
    nearest = used[similarity.argmax(dim=-1)]
    return {
        "tokens": int(ids.numel()),
        "relative_error": float((fitted - targets).pow(2).sum() / (targets - targets.mean(0)).pow(2).sum().clamp_min(1e-12)),
        "code_accuracy": float((nearest == ids).float().mean()),
    }


class VisualTokenizerWithFeatureDecoder(nn.Module):
    """The trained pair as one module (so that `accelerate`/DDP wraps a single forward).

    `forward(pixel_values [batch, 3, image_size, image_size])` -> [`VisualTokenizerTrainingOutput`]; the
    keyword options of :func:`visual_tokenizer_training_step` are fixed at construction.
    """

    def __init__(self, tokenizer: VideoLaVITVisualTokenizer, decoder: VideoLaVITFeatureDecoder, **step_options):
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = decoder
        self.step_options = step_options
        # the vision transformer is frozen: its features are the reconstruction target
        self.tokenizer.vision_model.requires_grad_(False)
        self.tokenizer.vit_proj.requires_grad_(False)

    def forward(
        self, pixel_values: torch.Tensor, sample: bool = True, generator: torch.Generator | None = None
    ) -> VisualTokenizerTrainingOutput:
        """See :func:`visual_tokenizer_training_step`."""
        return visual_tokenizer_training_step(
            self.tokenizer, self.decoder, pixel_values, sample=sample, generator=generator, **self.step_options
        )

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Token predictor, merger, code projection, codebook and decoder (not the ViT nor `vit_proj`)."""
        return [parameter for parameter in self.parameters() if parameter.requires_grad]


__all__ = [
    "FeatureDecoderConfig",
    "KEEP_INDEX",
    "VideoLaVITFeatureDecoder",
    "VisualTokenizerTrainingOutput",
    "VisualTokenizerWithFeatureDecoder",
    "fit_projection_to_code_embeddings",
    "normalize_codebook_",
    "restart_dead_visual_codes",
    "visual_tokenizer_training_step",
]
