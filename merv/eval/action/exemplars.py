"""Few-shot exemplars: labelled clips of the training split, drawn at random or by visual similarity."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal, Protocol

import torch

from merv.video import VideoDecodeError
from merv.video.clips import with_clip_axis

logger = logging.getLogger(__name__)

ExemplarStrategy = Literal["random", "similar"]


class ActionModel(Protocol):
    """What evaluation needs from a model (`merv.models.VideoLM` provides it)."""

    def get_prompt_builder(self) -> Any: ...

    def generate(self, video: Any, prompt_text: str, **kwargs: Any) -> str: ...

    def option_nll(self, video: Any, question: str, options: list[str], start=None, end=None) -> list[float]: ...

    def normalized_pixels(
        self, video: Any, start: float | None = None, end: float | None = None
    ) -> list[torch.Tensor]: ...

    def encode_aligned(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]: ...


def clip_reference(record: Mapping[str, Any]) -> dict[str, Any]:
    return {"video": record["video"], "start": record.get("start"), "end": record.get("end")}


@torch.no_grad()
def clip_embedding(model: ActionModel, record: Mapping[str, Any]) -> torch.Tensor:
    """Unit-norm visual descriptor of a clip (inside its segment) from the frozen encoders.

    Each encoder's aligned features `(1, T, N, D_e)` are mean-pooled over time and space and L2-normalised;
    the per-encoder vectors are concatenated and scaled by `1/sqrt(E)`, so the dot product of two
    descriptors is the mean over encoders of their cosine similarities (no encoder dominates by width).
    """
    pixels = [
        with_clip_axis(p) for p in model.normalized_pixels(record["video"], record.get("start"), record.get("end"))
    ]
    aligned = model.encode_aligned(pixels)
    parts = [torch.nn.functional.normalize(a.float().mean(dim=(1, 2)).reshape(-1), dim=0) for a in aligned]
    return torch.cat(parts).cpu() / len(parts) ** 0.5


class ExemplarSelector:
    """Picks `k` labelled clips from a pool (the training split) for each query.

    `random`: a seeded draw per query id (the same query gets the same exemplars in any order or chunk).
    `similar`: the `k` pool clips whose `clip_embedding` has the highest cosine similarity to the query's;
    pool features are computed once. Clips of the query's own video never serve as its exemplars. In the
    prompt the most similar exemplar comes last, next to the query.

    Args:
        pool: labelled records.
        k: exemplars per query.
        strategy: `random` or `similar`.
        seed: seed of the random draws (and of the pool subsample).
        max_pool: keep at most this many pool records (a seeded subsample); None keeps all.
        model: needed for `similar`.
    """

    def __init__(
        self,
        pool: Sequence[dict],
        k: int,
        strategy: ExemplarStrategy = "random",
        seed: int = 0,
        max_pool: int | None = None,
        model: ActionModel | None = None,
    ) -> None:
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if strategy not in ("random", "similar"):
            raise ValueError(f"exemplar strategy must be 'random' or 'similar', got {strategy!r}")
        if strategy == "similar" and model is None:
            raise ValueError("similarity-based exemplars need the model's encoders")
        pool = list(pool)
        if max_pool is not None and len(pool) > max_pool:
            pool = random.Random(seed).sample(pool, max_pool)
        self.k, self.strategy, self.seed, self.model = k, strategy, seed, model
        self.pool = [r for r in pool if r.get("video") is not None]
        self._features: torch.Tensor | None = None
        if strategy == "similar":
            self._embed_pool()
        if len(self.pool) < k:
            raise ValueError(f"the exemplar pool has {len(self.pool)} usable clips, fewer than k={k}")

    def _embed_pool(self) -> None:
        kept, feats = [], []
        started = time.perf_counter()
        for r in self.pool:
            try:
                feats.append(clip_embedding(self.model, r))
            except (VideoDecodeError, FileNotFoundError) as e:
                logger.warning("exemplar pool: skipping %s: %s", r.get("id"), e)
                continue
            kept.append(r)
        self.pool = kept
        self._features = torch.stack(feats) if feats else torch.zeros(0, 1)
        logger.info("embedded %d exemplar clips in %.1f s", len(kept), time.perf_counter() - started)

    def drop(self, video: str) -> None:
        """Remove every pool clip of an unreadable video."""
        keep = [i for i, r in enumerate(self.pool) if r["video"] != video]
        self.pool = [self.pool[i] for i in keep]
        if self._features is not None:
            self._features = self._features[keep]

    def select(self, query: Mapping[str, Any], query_embedding: torch.Tensor | None = None) -> list[dict]:
        """The exemplars for one query, in prompt order."""
        allowed = [i for i, r in enumerate(self.pool) if r["video"] != query.get("video")]
        if len(allowed) < self.k:
            raise ValueError(f"only {len(allowed)} exemplar clips come from other videos than {query.get('video')}")
        if self.strategy == "random":
            rng = random.Random(f"{self.seed}:{query['id']}")
            return [self.pool[i] for i in rng.sample(allowed, self.k)]
        if query_embedding is None:
            query_embedding = clip_embedding(self.model, query)
        sims = self._features[allowed] @ query_embedding
        top = torch.topk(sims, self.k).indices.tolist()  # most similar first
        return [self.pool[allowed[i]] for i in reversed(top)]
