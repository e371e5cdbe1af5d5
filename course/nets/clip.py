"""A mini-CLIP for the captioned-shapes world: contrastive image-text training, small and direct.

CLIP (Radford et al. 2021) trains an image encoder and a text encoder side by side so that a
picture and its caption land on nearby unit vectors. For a batch of B pairs it scores every image
against every caption, cosine similarity times a learned scale,

    logits[i, j] = exp(logit_scale) * <u_i, w_j>,   u = image_embeds / |image_embeds|,
                                                     w = text_embeds / |text_embeds|,

and asks each row and each column to pick out its diagonal entry: cross-entropy with label i in
both directions (images -> captions and captions -> images), averaged. That is the symmetric
InfoNCE loss, ``clip_loss`` below. exp(logit_scale) is an inverse temperature, learned: it starts
at 1 / 0.07 as in CLIP and is capped at 100.

The text side is transformers' real ``CLIPTextModelWithProjection`` (a causal transformer whose
end-of-text state is projected into the shared space), with the course's CLIP tokenizer; the
image side is a small CNN. Positions matter in this world ("on the left"), so the CNN keeps its
4x4 grid and flattens it instead of averaging it away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

#: CLIP's starting temperature, 0.07 (logit_scale = log(1 / 0.07)), and its cap on exp(scale)
INIT_LOGIT_SCALE = math.log(1 / 0.07)
MAX_LOGIT_SCALE = math.log(100)


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor,
              logit_scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of B matching pairs (row i of each is one pair).

    image_embeds: [B, D], text_embeds: [B, D], both *unnormalised* (normalised here);
    logit_scale: scalar tensor, the log of the inverse temperature. Returns a scalar.
    """
    image_embeds = F.normalize(image_embeds, dim=-1)  # unit vectors: dot product = cosine
    text_embeds = F.normalize(text_embeds, dim=-1)
    logits = logit_scale.exp() * image_embeds @ text_embeds.T  # [B images, B captions]
    labels = torch.arange(len(logits), device=logits.device)  # pair i sits on the diagonal
    image_to_text = F.cross_entropy(logits, labels)  # each image picks its caption (rows)
    text_to_image = F.cross_entropy(logits.T, labels)  # each caption picks its image (columns)
    return (image_to_text + text_to_image) / 2


class ImageEncoder(nn.Module):
    """images [B, 3, 32, 32] in [-1, 1] -> embeddings [B, dim] (unnormalised).

    Three stride-2 convolutions (32 -> 16 -> 8 -> 4), then the 4x4 grid flattened into a linear
    layer: which cell of the grid lit up is where the shape is.
    """

    def __init__(self, dim: int = 64, width: int = 32, image_size: int = 32):
        super().__init__()
        grid = image_size // 8
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2, padding=1), nn.GELU(),              # [B, w, 16, 16]
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GELU(),      # [B, 2w, 8, 8]
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1), nn.GELU(),  # [B, 2w, 4, 4]
            nn.Flatten(),                                                        # [B, 2w * 16]
            nn.Linear(2 * width * grid * grid, dim),                             # [B, dim]
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


@dataclass
class MiniCLIPConfig:
    dim: int = 64          # the shared embedding space
    image_width: int = 32  # channels of the CNN's first layer
    text_width: int = 64   # CLIPTextModel hidden size (as the tiny pipeline's)
    text_layers: int = 2
    text_heads: int = 2


class MiniCLIP(nn.Module):
    """An image encoder, a ``CLIPTextModelWithProjection`` and a learned ``logit_scale``."""

    def __init__(self, tokenizer, config: MiniCLIPConfig | None = None):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        self.config = config = config or MiniCLIPConfig()
        self.tokenizer = tokenizer
        self.image_encoder = ImageEncoder(config.dim, config.image_width)
        self.text_encoder = CLIPTextModelWithProjection(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=config.text_width,
            intermediate_size=2 * config.text_width, num_hidden_layers=config.text_layers,
            num_attention_heads=config.text_heads,
            max_position_embeddings=tokenizer.model_max_length, projection_dim=config.dim,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        self.logit_scale = nn.Parameter(torch.tensor(INIT_LOGIT_SCALE))

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def tokenize(self, captions: list[str]) -> torch.Tensor:
        """captions -> token ids [B, L], padded to the tokenizer's length."""
        return self.tokenizer(list(captions), padding="max_length", truncation=True,
                              max_length=self.tokenizer.model_max_length,
                              return_tensors="pt").input_ids.to(self.device)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """[B, 3, 32, 32] -> [B, dim], unnormalised."""
        return self.image_encoder(images.to(self.device))

    def encode_text(self, captions: list[str]) -> torch.Tensor:
        """B captions -> [B, dim], unnormalised (the projected end-of-text state)."""
        return self.text_encoder(input_ids=self.tokenize(captions)).text_embeds

    @torch.no_grad()
    def similarity(self, images: torch.Tensor, captions: list[str]) -> torch.Tensor:
        """Cosine similarity of every image with every caption: [n_images, n_captions]."""
        u = F.normalize(self.encode_image(images), dim=-1)
        w = F.normalize(self.encode_text(captions), dim=-1)
        return (u @ w.T).cpu()


def train_clip(model: MiniCLIP, steps: int, lr: float = 2e-3, seed: int = 0, loss_fn=clip_loss,
               progress: bool = True) -> list[float]:
    """Train ``model`` for ``steps`` batches of fresh shapes-world pairs; returns the losses.

    Each batch is one round of the 54 training combinations (``shapes_dataset``'s rounds hold
    each once), freshly jittered: every caption in a batch is different, so the off-diagonal
    pairs are true non-matches. The six HELDOUT combinations are never shown.
    """
    from tqdm.auto import tqdm

    from ..data import HELDOUT, all_combinations, shapes_dataset

    batch = len(all_combinations()) - len(HELDOUT)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    losses = []
    model.train()
    for step in tqdm(range(steps), desc="training mini-CLIP", disable=not progress):
        images, captions = shapes_dataset(batch, seed=seed * 1_000_003 + step, split="train")
        loss = loss_fn(model.encode_image(images), model.encode_text(captions), model.logit_scale)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        with torch.no_grad():  # as CLIP: keep exp(logit_scale) <= 100
            model.logit_scale.clamp_(max=MAX_LOGIT_SCALE)
        losses.append(loss.item())
    model.eval()
    return losses


@torch.no_grad()
def zero_shot(model: MiniCLIP, images: torch.Tensor, candidates: list[str],
              batch_size: int = 256) -> torch.Tensor:
    """For each image, the index of the candidate caption most similar to it: LongTensor [n]."""
    w = F.normalize(model.encode_text(candidates), dim=-1)
    picks = [(F.normalize(model.encode_image(chunk), dim=-1) @ w.T).argmax(-1).cpu()
             for chunk in images.split(batch_size)]
    return torch.cat(picks)
