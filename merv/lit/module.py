"""`MERVLitModule`: thin Lightning glue around `VideoLM` (stages, optimisation, logging)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import FSDPStrategy

from merv.lit.checkpoints import init_weights, merge_adapters_unless_lora
from merv.models import VideoLM, VideoLMConfig
from merv.models.vidlm import Stage


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
        # Frozen weights from a named pretrained source are not stored in checkpoints (see on_save_checkpoint).
        self.strict_loading = False

    def configure_model(self) -> None:
        if self.model is not None:
            return
        self.model = VideoLM(self.config)
        if self.hparams.init_from:
            init_weights(self.model, self.hparams.init_from)
            merge_adapters_unless_lora(self.model, self.stage)
        self.model.freeze(self.stage)
        if self.hparams.gradient_checkpointing:
            self.model.llm.gradient_checkpointing_enable()
            # With a frozen LLM the checkpointed blocks still need an input that requires grad.
            self.model.llm.enable_input_require_grads()

    @property
    def processor(self):
        self.configure_model()
        return self.model.processor

    def forward(self, batch: dict[str, Any]):
        return self.model(**{k: v for k, v in batch.items() if k in _MODEL_INPUTS})

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        if "input_ids" not in batch:
            return None  # every video of this batch was unreadable: nothing to learn from
        out = self(batch)
        self.log("train/loss", out.loss, prog_bar=True, batch_size=len(batch["input_ids"]))
        return out.loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:
            return
        self.log("val/loss", self(batch).loss, prog_bar=True, sync_dist=True, batch_size=len(batch["input_ids"]))

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if "input_ids" not in batch:
            return
        self.log("test/loss", self(batch).loss, sync_dist=True, batch_size=len(batch["input_ids"]))

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
        if grads:
            norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            self.log("train/grad_norm", norm)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Frozen weights that came from a named source are reloaded from it, so they need not be stored
        # in every checkpoint (a 7B LLM in the align stage would otherwise dominate each file).
        state = checkpoint["state_dict"]
        for name, param in self.model.named_parameters():
            if not param.requires_grad and self._from_named_source(name):
                state.pop(f"model.{name}", None)

    def _from_named_source(self, name: str) -> bool:
        if name.startswith("encoders."):
            return self.config.encoders[int(name.split(".")[1])].pretrained is not None
        return name.startswith("llm.") and self.config.llm.name_or_path is not None


_MODEL_INPUTS = ("input_ids", "attention_mask", "video_mask", "pixel_values", "labels", "aligned_features")
