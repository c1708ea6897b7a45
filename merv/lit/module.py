"""`MERVLitModule`: thin Lightning glue around `VideoLM` (stages, optimisation, logging)."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from merv.data.features import OnMiss
from merv.data.visual_inputs import VisualInputs
from merv.lit.checkpoints import init_weights, merge_adapters_unless_lora
from merv.lit.strategies import is_sharded
from merv.models import VideoLM, VideoLMConfig
from merv.models.prompting import VIDEO_TOKEN
from merv.models.vidlm import Stage, VideoLMOutput

logger = logging.getLogger(__name__)

# Lightning notes that a module's `on_after_batch_transfer` is used although a data module was passed: that is
# the intent here, the module completing batches with its own encoders (the data module has no such hook).
warnings.filterwarnings("ignore", message="You have overridden `on_after_batch_transfer` in `LightningModule`")


class MERVLitModule(L.LightningModule):
    """Trains a `VideoLM` in one stage.

    Args:
        vidlm: the VideoLM architecture.
        stage: `align` (projectors + fusion), `finetune` (+ LLM) or `lora` (+ LoRA adapters).
        init_from: a previous stage's checkpoint (`.ckpt`, run dir or `save_pretrained` dir); every trained
            module it holds is loaded. Use `--ckpt_path` instead to resume this same run.
        lr: peak learning rate.
        weight_decay: AdamW decay for weight matrices (biases, norms and 1-D parameters get none).
        betas: AdamW betas.
        warmup_ratio: fraction of the total steps spent warming up linearly from 0.
        min_lr_ratio: the cosine schedule ends at `lr * min_lr_ratio`.
        gradient_checkpointing: recompute LLM activations in backward to save memory.
        feature_cache: folder of a feature cache (`merv cache build --config <experiment.yaml>`);
            training then reads the frozen encoders' aligned features from it instead of decoding videos.
        feature_cache_on_miss: what a sample without a valid cache entry does: `encode` (decode it and run the
            frozen encoders live, in `on_after_batch_transfer`) or `error` (fail the run, naming the record).
        video_cache: folder of a video tensor cache: clips whose decoded, resized pixels are there (for the
            model's frame counts and sizes, and the file as it is now) are read instead of decoded.
        video_cache_writable: also store the clips decoded while training (off by default, so a run never
            writes into a cache other runs read).

    The module owns the model and therefore its visual inputs: the data module builds its datasets through
    `visual_inputs`, which holds both caches.
    """

    def __init__(
        self,
        vidlm: VideoLMConfig,
        stage: Stage = "align",
        init_from: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        feature_cache: str | None = None,
        feature_cache_on_miss: OnMiss = "encode",
        video_cache: str | None = None,
        video_cache_writable: bool = False,
    ) -> None:
        super().__init__()
        if isinstance(vidlm, dict):  # from a checkpoint's hyper-parameters
            vidlm = VideoLMConfig(**vidlm)
        self.save_hyperparameters(ignore=["vidlm"])
        # Plain types only, so checkpoints load with `torch.load(weights_only=True)`.
        self.hparams["vidlm"] = vidlm.to_dict()
        self.config = vidlm
        self.stage = stage
        self.model: VideoLM | None = None
        self._visual_inputs: VisualInputs | None = None
        # Frozen weights from a named pretrained source are not stored in checkpoints (see on_save_checkpoint).
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = VideoLM(self.config)
        if self.hparams.init_from:
            init_weights(self.model, self.hparams.init_from)
            merge_adapters_unless_lora(self.model, self.stage)
        self.model.set_trainable(self.stage)
        self._store_trained_weights_in_float32()
        if self.hparams.gradient_checkpointing:
            self.model.llm.gradient_checkpointing_enable()
            # With a frozen LLM the checkpointed blocks still need an input that requires grad.
            self.model.llm.enable_input_require_grads()

    def _store_trained_weights_in_float32(self) -> None:
        """Under mixed precision, keep the weights the optimizer updates in float32.

        Mixed precision computes in bf16/fp16 but must update fp32 weights: an LLM loaded in bf16 (as
        `merv-full` is, to halve its memory) would have AdamW steps of lr 2e-5 on weights near 1 rounded away,
        since bf16 resolves only 1/128 there. DeepSpeed keeps fp32 master copies itself. FSDP flattens one
        dtype per unit and casts to bf16 for compute on its own, so there the whole LLM goes to fp32 (frozen
        base weights share units with LoRA adapters). "-true" precisions ask for half-precision weights.
        """
        trainer = self._trainer
        if trainer is None or not str(trainer.precision).endswith("-mixed"):
            return
        if isinstance(trainer.strategy, DeepSpeedStrategy):
            return
        half = [p for p in self.model.parameters() if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16)]
        if not half:
            return
        if isinstance(trainer.strategy, FSDPStrategy):
            self.model.llm.float()
        else:
            for param in half:
                param.data = param.data.float()
        logger.info("%s: storing %d trained parameter tensors in float32", trainer.precision, len(half))

    @property
    def visual_inputs(self) -> VisualInputs:
        """Builds this model's datasets (pixels, or cached features) and completes partly cached batches."""
        if self._visual_inputs is None:
            self.configure_model()
            hp = self.hparams
            if hp.feature_cache and hp.feature_cache_on_miss == "encode" and self._trainer is not None:
                strategy = self.trainer.strategy
                if is_sharded(strategy):
                    # Only the ranks with a miss would run the sharded encoders, and wait forever for the others
                    # to gather their weights.
                    raise ValueError(
                        f"model.feature_cache_on_miss=encode cannot run under {type(strategy).__name__}, which "
                        "shards the encoders: build the cache for every video and set "
                        "model.feature_cache_on_miss=error"
                    )
            self._visual_inputs = VisualInputs(
                self.model,
                feature_cache=hp.feature_cache,
                on_miss=hp.feature_cache_on_miss,
                video_cache=hp.video_cache,
                video_cache_writable=hp.video_cache_writable,
            )
        return self._visual_inputs

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # A batch the feature cache only partly covers carries pixels for the other samples: encode them with
        # the frozen encoders here, on the device, so the model always receives complete `aligned_features`.
        return self.visual_inputs.fill_missing(batch)

    def forward(self, batch: dict[str, Any]):
        return self.model(**{k: v for k, v in batch.items() if k in _MODEL_INPUTS})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "input_ids" not in batch:
            stand_in = self._join_other_ranks(batch_idx)
            return None if stand_in is None else stand_in.loss * 0.0  # trains on nothing
        visual = self._visual_stand_in(batch)  # before the LLM, in the order the other ranks run them
        out = self(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return out.loss if visual is None else out.loss + 0.0 * visual.sum()

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:
            self._join_other_ranks(batch_idx)
            return
        self._visual_stand_in(batch)
        self.log("val/loss", self(batch).loss, prog_bar=True, sync_dist=True, batch_size=len(batch["input_ids"]))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:
            self._join_other_ranks(batch_idx)
            return
        self._visual_stand_in(batch)
        self.log("test/loss", self(batch).loss, sync_dist=True, batch_size=len(batch["input_ids"]))

    def _visual_stand_in(self, batch: dict[str, Any]) -> torch.Tensor | None:
        """For a text-only batch (e.g. Video-LLaVA's language instructions) with several processes: the
        encoders, projectors and fusion are left out of this rank's forward while the other ranks run them
        (gathering their FSDP/ZeRO-3 shards, and all-reducing their gradients), so run just them, on a
        stand-in clip, before the LLM as the other ranks do. Returns the fused visual tokens, to be added
        to the loss times zero; None when nothing needs joining."""
        if self.trainer.world_size == 1 or any(batch.get(k) is not None for k in ("pixel_values", "aligned_features")):
            return None
        stand_in = self._stand_in_batch()
        aligned = stand_in.get("aligned_features") or self.model.encode_aligned(stand_in["pixel_values"])
        return self.model.fuse(aligned)[0]

    def _join_other_ranks(self, batch_idx: int) -> VideoLMOutput | None:
        """For a batch whose every video was unreadable (the data module counts them): on one process, nothing.

        With several processes the other ranks run a forward (and in training a backward) whose collectives
        (DDP's gradient all-reduce, FSDP's and ZeRO-3's parameter gathers) this rank must join, or they wait
        forever: it runs a stand-in sample through the same modules instead, and returns its output.
        """
        if self.trainer.world_size == 1:
            return None
        logger.warning("rank %d: every video of batch %d was unreadable", self.global_rank, batch_idx)
        return self(self._stand_in_batch())

    def _stand_in_batch(self) -> dict[str, Any]:
        """One blank video and a one-word answer, shaped like a real batch: pixels, or aligned features when
        training reads a feature cache (then the other ranks do not run the encoders either)."""
        model = self.model
        sample = {
            "video": torch.zeros(max(model.processor.frame_counts), 32, 32, 3, dtype=torch.uint8),
            "conversations": [{"from": "human", "value": f"{VIDEO_TOKEN}\n."}, {"from": "gpt", "value": "."}],
        }
        batch = model.prepare_batch([sample])
        if self.hparams.feature_cache:
            shape = (1, model.temporal_tokens, self.config.tokens_per_frame)
            batch["aligned_features"] = [torch.zeros(*shape, enc.embed_dim) for enc in model.encoders]
            batch["pixel_values"] = None
        return self.transfer_batch_to_device(batch, self.device, 0)

    def configure_optimizers(self):
        decay, no_decay = [], []
        for param in self.model.parameters():
            if param.requires_grad:
                (decay if param.ndim >= 2 else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.hparams.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        optimizer = torch.optim.AdamW([g for g in groups if g["params"]], lr=self.hparams.lr, betas=self.hparams.betas)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(self.hparams.warmup_ratio * total)
        floor = self.hparams.min_lr_ratio

        def schedule(step: int) -> float:
            if step < warmup:
                return (step + 1) / (warmup + 1)
            progress = min(1.0, (step - warmup) / max(1, total - warmup))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        if gradient_clip_val is None:
            return
        if isinstance(self.trainer.strategy, FSDPStrategy):
            # Sharded parameters: only the FSDP root can compute the global norm.
            self.trainer.model.clip_grad_norm_(gradient_clip_val)
        else:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        strategy = self.trainer.strategy
        # DeepSpeed keeps gradients to itself (`p.grad` stays None): only FSDP's shards are summed up here.
        sharded = isinstance(strategy, FSDPStrategy) and is_sharded(strategy)
        if not grads and not sharded:
            return
        squares = torch.zeros((), device=self.device)
        for g in grads:
            squares += torch.linalg.vector_norm(g.float()).square()
        if sharded and dist.is_available() and dist.is_initialized():
            # Each rank holds the gradients of its own shard (some none at all): the norm of the whole
            # gradient adds up every shard's squares. Every rank must take part, hence no early return above.
            dist.all_reduce(squares, group=getattr(self.trainer.model, "process_group", None))
        self.log("train/grad_norm", squares.sqrt())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen weights that came from a named source are reloaded from it, so they need not be stored
        # in every checkpoint (a 7B LLM in the align stage would otherwise dominate each file).
        state = checkpoint["state_dict"]
        for name, param in self.model.named_parameters():
            if self.model.stored_by_reference(name, trained=param.requires_grad):
                state.pop(f"model.{name}", None)


_MODEL_INPUTS = ("input_ids", "attention_mask", "video_mask", "pixel_values", "labels", "aligned_features")
