"""VisionLanguageModel: open_clip vision tower → projector → spliced into a causal LM; heads on top."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelCfg
from .generation import right_pad
from .projector import build_projector
from .prompts import encode_prompt
from .splice import IMAGE_PLACEHOLDER_ID, splice_image_embeddings
from .vision import VisionTokens, clip_embed_dim, vision_width


class ImageProjector(nn.Module):
    """Grid tokens (B, G, C) and, if configured, the CLIP image embedding (B, E) → LM space (B, [1+]G, D)."""

    def __init__(self, cfg: ModelCfg, token_width: int, embed_dim: int, lm_width: int):
        super().__init__()
        self.grid = build_projector(cfg.projector.type, token_width, lm_width)
        self.summary = build_projector(cfg.projector.type, embed_dim, lm_width) if cfg.vision.global_token else None

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor) -> torch.Tensor:
        grid = self.grid(tokens)
        if self.summary is None:
            return grid
        return torch.cat([self.summary(pooled)[:, None], grid], dim=1)


class SentimentHead(nn.Module):
    """Mean LM hidden state over image positions ⊕ over text positions (B, 2D) → class logits (B, C).

    With a token adapter (vocab_size > 0) the head also owns an embedding offset per token, added to the text
    positions' input embeddings on the sentiment path only: generation never sees it, so captions and answers
    stay exactly as they were, and only this head's file changes when it trains.
    """

    def __init__(self, lm_width: int, hidden: int, n_classes: int, vocab_size: int = 0):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(2 * lm_width), nn.Linear(2 * lm_width, hidden), nn.GELU(), nn.Linear(hidden, n_classes))
        self.token_delta = nn.Embedding(vocab_size, lm_width) if vocab_size else None
        if self.token_delta is not None:
            nn.init.zeros_(self.token_delta.weight)  # starts as the plain LM

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features (B, 2D) from VisionLanguageModel.sentiment_features → logits (B, C).

        The features come in the LM's dtype; the head reads them in its own: float32 on the CPU and in training,
        bf16 once the whole model is cast for a GPU (its LayerNorm refuses a float32 input against bf16 weights)."""
        return self.net(features.to(self.net[0].weight.dtype))

    def adapt(self, embeds: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Spliced input embeddings (B, T, D) plus this head's offsets at text positions (unchanged without one)."""
        if self.token_delta is None:
            return embeds
        is_text = (input_ids != IMAGE_PLACEHOLDER_ID)[..., None]  # (B, T, 1)
        return embeds + self.token_delta(input_ids.clamp(min=0)).to(embeds.dtype) * is_text


def pool_hidden(hidden: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Hidden states (B, T, D) → mean over image positions ⊕ mean over text positions (B, 2D)."""
    is_image = (input_ids == IMAGE_PLACEHOLDER_ID).to(hidden.dtype)  # (B, T)
    is_text = attention_mask.to(hidden.dtype) * (1.0 - is_image)
    pooled = [(hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1.0) for mask in (is_image, is_text)]
    return torch.cat(pooled, dim=-1)


class VisionLanguageModel(nn.Module):
    def __init__(self, cfg: ModelCfg, clip, lm, tokenizer):
        super().__init__()
        self.cfg = cfg
        self.clip = clip  # open_clip CLIP: .visual is the vision tower, the rest the text tower
        self.vision = VisionTokens(clip, cfg.vision.token_grid)
        self.lm = lm
        self.tokenizer = tokenizer
        lm_width = lm.get_input_embeddings().embedding_dim
        self.projector = ImageProjector(cfg, vision_width(clip), clip_embed_dim(clip), lm_width)
        self.sentiment_head = self.new_sentiment_head()

    def new_sentiment_head(self) -> SentimentHead:
        """A freshly initialised sentiment head as the config describes it."""
        embeddings = self.lm.get_input_embeddings()
        vocab_size = embeddings.num_embeddings if self.cfg.heads.token_adapter else 0
        return SentimentHead(embeddings.embedding_dim, self.cfg.heads.hidden, len(self.cfg.heads.sentiment_labels), vocab_size)

    @property
    def n_image_tokens(self) -> int:
        return self.cfg.vision.token_grid**2 + int(self.cfg.vision.global_token)

    @property
    def device(self) -> torch.device:
        # the LM's input embedding: a parameter that int8 dynamic quantization leaves in place
        return self.lm.get_input_embeddings().weight.device

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) → image embeddings in LM space (B, K, D)."""
        tokens, pooled = self.vision(pixels.to(self.device, self.projector_dtype))
        return self.projector(tokens, pooled)

    @property
    def projector_dtype(self) -> torch.dtype:
        return self.lm.get_input_embeddings().weight.dtype

    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor) -> torch.Tensor:
        return splice_image_embeddings(self.lm.get_input_embeddings(), input_ids, image_embeds)

    def forward(self, input_ids, attention_mask, image_embeds, labels=None, position_ids=None, **kwargs):
        """One LM pass over spliced embeddings; input_ids (B, T) with K placeholders per row."""
        return self.run_lm(self.embed(input_ids, image_embeds), attention_mask, labels, position_ids, **kwargs)

    def run_lm(self, embeds, attention_mask, labels=None, position_ids=None, **kwargs):
        """The LM over input embeddings (B, T, D); positions count only attended tokens (left padding)."""
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        return self.lm(
            inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, labels=labels, **kwargs
        )

    def sentiment_features(self, input_ids, attention_mask, image_embeds, head: SentimentHead | None = None) -> torch.Tensor:
        """The pooled LM features `head` (default: this model's) reads: (B, 2D)."""
        head = head or self.sentiment_head
        embeds = head.adapt(self.embed(input_ids, image_embeds), input_ids)
        out = self.run_lm(embeds, attention_mask, output_hidden_states=True)
        return pool_hidden(out.hidden_states[-1], input_ids, attention_mask)

    def sentiment_features_for(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) and their posts → the pooled features the head reads (B, 2D)."""
        prompts = [encode_prompt(self.tokenizer, "sentiment", self.n_image_tokens, text=t.strip()) for t in texts]
        input_ids, mask = right_pad(prompts, self.tokenizer.pad_token_id)
        return self.sentiment_features(input_ids.to(self.device), mask.to(self.device), self.encode_images(pixels))

    def clip_similarity(self, pixels: torch.Tensor, text_tokens: torch.Tensor) -> torch.Tensor:
        """Cosine similarities scaled by CLIP's learned temperature: (B_images, B_texts)."""
        _, image = self.vision(pixels.to(self.device, self.projector_dtype))
        text = self.clip.encode_text(text_tokens.to(self.device))
        image, text = F.normalize(image.float(), dim=-1), F.normalize(text.float(), dim=-1)
        return self.clip.logit_scale.exp().float() * image @ text.T
