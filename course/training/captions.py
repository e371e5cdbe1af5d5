"""Text conditioning during training: token ids of the captions, and the two ways a caption is
changed on the fly (dropped to "" for classifier-free guidance, or swapped for another)."""

from __future__ import annotations

import torch


def loosen_captions(captions: list[str], p: float, vocabulary: list[str],
                    generator: torch.Generator) -> list[str]:
    """Each caption independently becomes, with probability ``p``, another caption drawn
    uniformly from ``vocabulary`` (never itself): the image no longer matches its text."""
    swap = (torch.rand(len(captions), generator=generator) < p).tolist()
    picks = torch.randint(0, len(vocabulary) - 1, (len(captions),), generator=generator).tolist()
    loosened = []
    for text, swapped, pick in zip(captions, swap, picks):
        others = [c for c in vocabulary if c != text]
        loosened.append(others[pick % len(others)] if swapped else text)
    return loosened


def drop_captions(captions: list[str], p: float, generator: torch.Generator) -> list[str]:
    """Conditioning dropout: each caption independently becomes the empty prompt "" with
    probability ``p`` (a whole-batch coin flip would train the two modes in lumps)."""
    drop = torch.rand(len(captions), generator=generator) < p
    return ["" if dropped else text for text, dropped in zip(captions, drop.tolist())]


class PromptCache:
    """Token ids [L] of each prompt, tokenized once as the pipeline does it: padded with
    <|endoftext|> to ``tokenizer.model_max_length`` and truncated there."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str], device=None) -> torch.Tensor:
        """Token ids [len(prompts), L], on ``device``."""
        missing = sorted({p for p in prompts if p not in self.ids})
        if missing:
            encoded = self.tokenizer(missing, padding="max_length", truncation=True,
                                     max_length=self.tokenizer.model_max_length,
                                     return_tensors="pt").input_ids
            self.ids.update(zip(missing, encoded))
        return torch.stack([self.ids[p] for p in prompts]).to(device)
