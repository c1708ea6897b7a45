"""`VideoLM`: frozen visual encoders → alignment → projectors → fusion → a causal language model.

Plain PyTorch (no Lightning): build from a `VideoLMConfig`, `set_trainable(stage)`, call with a batch from
`prepare_batch`, `generate` text, and `save_pretrained` / `from_pretrained` a directory.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from merv.models.encoders import VisionEncoder, build_encoder
from merv.models.fusion import FusionKind, build_fusion
from merv.models.llm import LLMConfig, build_llm, load_llm, load_tokenizer
from merv.models.processor import IGNORE_INDEX, VideoLMProcessor
from merv.models.projector import Projector
from merv.models.prompting import GPT, HUMAN, VIDEO_TOKEN, PromptBuilder, PromptFormat
from merv.models.sources import CONFIG_NAME
from merv.video.clips import with_clip_axis

logger = logging.getLogger(__name__)

Stage = Literal["align", "finetune", "lora"]
_LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
WEIGHTS_NAME = "model.safetensors"
LLM_DIR, ADAPTER_DIR = "llm", "llm_adapter"


@dataclass
class EncoderConfig:
    """One frozen visual encoder."""

    id: str
    """Registered encoder id (see `merv.models.list_encoders()`)."""
    num_frames: int | None = None
    """Frames this encoder samples per video; None = the id's default."""
    pretrained: str | None = None
    """Hub id or local directory of its weights; None = random init (then saved by value in checkpoints)."""


@dataclass
class LoraSettings:
    """LoRA adapters put on the LLM in the `lora` stage."""

    r: int = 16
    """Adapter rank."""
    alpha: int = 32
    """Scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = 0.05
    """Dropout on the adapter input."""
    target_modules: str | list[str] = "all-linear"
    """Module names to adapt; `all-linear` = every linear layer except the output head."""


@dataclass
class VideoLMConfig:
    """Architecture of a `VideoLM`."""

    encoders: list[EncoderConfig] = field(default_factory=list)
    """Frozen visual encoders, each with its own frame count."""
    llm: LLMConfig = field(default_factory=LLMConfig)
    """The causal language model and its prompt format."""
    temporal_tokens: int | None = None
    """Common temporal length T every encoder is aligned to; None = the smallest encoder T'."""
    tokens_per_frame: int = 16
    """Spatial tokens kept per temporal step after pooling (a square number)."""
    projector: Literal["linear", "mlp"] = "mlp"
    """Per-encoder projection to the LLM width."""
    fusion: FusionKind = "cross-attention"
    """How the encoders' sequences are combined."""
    max_length: int = 2048
    """Longest token sequence (text + visual) fed to the LLM; longer training text is cut at the end, a longer
    generation prompt is an error. Must leave room for text after the visual tokens."""
    lora: LoraSettings = field(default_factory=LoraSettings)
    """Adapter settings used by `set_trainable("lora")`."""

    def __post_init__(self) -> None:
        # Accept plain dicts (from config.json or YAML) as well as the dataclasses.
        self.encoders = [EncoderConfig(**e) if isinstance(e, dict) else e for e in self.encoders]
        if isinstance(self.llm, dict):
            self.llm = LLMConfig(**self.llm)
        if isinstance(self.lora, dict):
            self.lora = LoraSettings(**self.lora)
        if not self.encoders:
            raise ValueError("a VideoLM needs at least one encoder")

    @classmethod
    def tiny(cls, fusion: FusionKind = "cross-attention") -> VideoLMConfig:
        """CPU-sized config: an image and a video encoder at 4 and 8 frames, a 2-layer random LLM."""
        return cls(
            encoders=[EncoderConfig("siglip-tiny", num_frames=4), EncoderConfig("vivit-tiny", num_frames=8)],
            llm=LLMConfig(),
            tokens_per_frame=4,
            fusion=fusion,
            max_length=512,
            # The tiny LLM's output head is adapted too, so LoRA can teach it words it never produced.
            lora=LoraSettings(target_modules=[*_LLAMA_LINEAR, "lm_head"]),
        )

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> VideoLMConfig:
        """A registered architecture (see `merv.available_models()`), with `overrides` of its fields."""
        from merv.models.registry import model_config  # the registry builds on this class

        return model_config(name, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class VideoLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor
    fusion_weights: torch.Tensor | None
    """Per-encoder fusion weights `(B_v, E)` of the videos in the batch (None for concat fusions)."""


def aligned_temporal_tokens(encoders: Sequence[VisionEncoder], temporal_tokens: int | None = None) -> int:
    """The common temporal length T every encoder's tokens are aligned to: `temporal_tokens` when set (the
    config's value), else the smallest temporal token count T' among the encoders."""
    return temporal_tokens or min(e.temporal_tokens for e in encoders)


def build_encoders(configs: Sequence[EncoderConfig]) -> nn.ModuleList:
    """The frozen encoders of a model with these encoder configs, in their order.

    Randomly initialised weights are drawn from a stream seeded by the process's seed (`torch.initial_seed()`,
    which `seed_everything` and `torch.manual_seed` set) and the encoder's position, not from the global random
    stream, which is left as it was. So one seed gives the same encoders however much randomness was drawn
    before: the feature cache builder, which builds the encoders without the rest of the model, gets the very
    weights training will hold (random encoders are keyed by a hash of their weights). Named pretrained
    weights are loaded over the random ones.
    """
    encoders = nn.ModuleList()
    for index, cfg in enumerate(configs):
        mixed = hashlib.sha256(f"{torch.initial_seed()}/{index}".encode()).digest()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int.from_bytes(mixed[:8], "little"))
            encoders.append(build_encoder(cfg.id, pretrained=cfg.pretrained, num_frames=cfg.num_frames))
    return encoders


def _is_peft(module: nn.Module) -> bool:
    return hasattr(module, "peft_config")


class VideoLM(nn.Module):
    """A video language model built from several frozen visual encoders and a causal LM.

    Args:
        config: the architecture.
        llm: an already built LLM (used by `from_pretrained`); built from `config.llm` when None.
        tokenizer: its tokenizer; loaded or built from `config.llm` when None.
    """

    def __init__(self, config: VideoLMConfig, *, llm: nn.Module | None = None, tokenizer=None) -> None:
        super().__init__()
        config = copy.deepcopy(config)
        side = math.isqrt(config.tokens_per_frame)
        if config.tokens_per_frame < 1 or side * side != config.tokens_per_frame:
            raise ValueError(
                f"tokens_per_frame={config.tokens_per_frame} must be a positive square number (1, 4, 9, 16, ...): "
                "each frame's spatial tokens are pooled to a square grid"
            )
        self.encoders = build_encoders(config.encoders)
        for enc_cfg, enc in zip(config.encoders, self.encoders):
            enc_cfg.num_frames = enc.num_frames  # the saved config states every frame count
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(config.llm)
        self.llm = llm if llm is not None else build_llm(config.llm, self.tokenizer)
        width = self.llm.get_input_embeddings().embedding_dim
        self.temporal_tokens = aligned_temporal_tokens(self.encoders, config.temporal_tokens)
        self.projectors = nn.ModuleList(Projector(e.embed_dim, width, config.projector) for e in self.encoders)
        self.fusion = build_fusion(config.fusion, width, len(self.encoders))
        self.config = config
        self.num_visual_tokens = self.fusion.output_length(self.temporal_tokens * config.tokens_per_frame)
        if self.num_visual_tokens >= config.max_length:
            # Otherwise every sample would fail later, one by one, with no hint at the cause.
            hint = ", or use a fusion that does not concatenate sequences" if config.fusion == "concat-sequence" else ""
            raise ValueError(
                f"{config.fusion!r} fusion gives L_v={self.num_visual_tokens} visual tokens "
                f"({len(self.encoders)} encoder(s), T={self.temporal_tokens} x tokens_per_frame="
                f"{config.tokens_per_frame}), leaving no room for text in max_length={config.max_length}: "
                f"raise max_length or lower temporal_tokens / tokens_per_frame{hint}"
            )
        self.processor = VideoLMProcessor(
            self.tokenizer,
            self._prompt_format(),
            [e.frame_spec for e in self.encoders],
            self.num_visual_tokens,
            config.max_length,
        )
        self.stage: Stage | None = None
        self.last_fusion_weights: torch.Tensor | None = None
        self.requires_grad_(False)
        for enc in self.encoders:
            enc.eval()

    def _prompt_format(self, system_prompt: str | None = None) -> PromptFormat:
        name = self.config.llm.prompt_format
        if name == "auto":
            name = "chat_template" if getattr(self.tokenizer, "chat_template", None) else "merv"
        return PromptFormat(name, self.tokenizer.eos_token, self.tokenizer, system_prompt)

    @property
    def device(self) -> torch.device:
        return next(self.projectors.parameters()).device

    # ---- training stages -----------------------------------------------------------------------

    def set_trainable(self, stage: Stage) -> None:
        """Make exactly the parameters `stage` trains require gradients, and freeze every other one.

        `align`: projectors + fusion. `finetune`: projectors + fusion + the whole LLM. `lora`: projectors +
        fusion + LoRA adapters, added to the LLM if it has none. Encoders never train. (Unlike Lightning's
        `LightningModule.freeze`, this unfreezes what the stage trains and leaves train/eval mode alone.)
        """
        if stage not in ("align", "finetune", "lora"):
            raise ValueError(f"unknown stage {stage!r}; expected align, finetune or lora")
        if stage == "lora" and not _is_peft(self.llm):
            self.add_lora()
        self.requires_grad_(False)
        for module in (*self.projectors, self.fusion):
            module.requires_grad_(True)
        if stage == "finetune":
            self.llm.requires_grad_(True)
        elif stage == "lora":
            for name, param in self.llm.named_parameters():
                param.requires_grad_("lora_" in name)
        self.stage = stage

    def add_lora(self) -> None:
        """Wrap the LLM with peft LoRA adapters configured by `config.lora`."""
        from peft import LoraConfig, get_peft_model

        s = self.config.lora
        lora = LoraConfig(
            r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout, target_modules=s.target_modules, task_type="CAUSAL_LM"
        )
        # Keep adapters in the LLM's dtype: FSDP needs one dtype per flat parameter unit.
        self.llm = get_peft_model(self.llm, lora, autocast_adapter_dtype=False)

    # ---- inputs --------------------------------------------------------------------------------

    def normalized_pixels(self, frames, start: float | None = None, end: float | None = None) -> list[torch.Tensor]:
        """Video path or `(T, H, W, 3)` uint8 frames → one `(T_e, 3, H_e, W_e)` float tensor per encoder,
        normalised the encoder's way.

        `processor.preprocess` gives the same pixels as uint8, which is what batches carry (`encode_aligned`
        normalises them on the model's device); this is for feeding an encoder directly.
        """
        specs = self.processor.frame_specs
        return [spec.normalize(p) for spec, p in zip(specs, self.processor.preprocess(frames, start, end))]

    def prepare_batch(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Samples with `video` (path, frames or None) and LLaVA `conversations` → `model(**batch)` input."""
        return self.processor(samples)

    def get_prompt_builder(self, system_prompt: str | None = None) -> PromptBuilder:
        """MERV-style incremental prompt builder in this model's prompt format."""
        return PromptBuilder(self._prompt_format(system_prompt))

    # ---- forward -------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_aligned(self, pixel_values: list[torch.Tensor]) -> list[torch.Tensor]:
        """Frozen part: run each encoder and align it to `(B, T, tokens_per_frame, D_e)`.

        `pixel_values` are the processor's uint8 pixels (normalised here, on the device) or already
        normalised float pixels.
        """
        t, tpf = self.temporal_tokens, self.config.tokens_per_frame
        # Through `__call__` (not `enc.encode_aligned`): FSDP gathers a wrapped encoder's weights there.
        return [enc(px, t, tpf) for enc, px in zip(self.encoders, pixel_values)]

    def fuse(self, aligned: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Trainable part: project each aligned sequence and fuse them → `(B, L_v, D_llm)`, weights `(B, E)`."""
        dtype = next(self.projectors.parameters()).dtype
        projected = [proj(a.to(self.device, dtype).flatten(1, 2)) for proj, a in zip(self.projectors, aligned)]
        fused, weights = self.fusion(projected)
        self.last_fusion_weights = None if weights is None else weights.detach()
        return fused, weights

    def embed_inputs(
        self,
        input_ids: torch.Tensor,
        video_mask: torch.Tensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        aligned_features: list[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Token embeddings with the fused visual tokens written at the `video_mask` positions."""
        embeds = self.llm.get_input_embeddings()(input_ids)  # (B, L, D)
        if aligned_features is None and pixel_values is not None:
            aligned_features = self.encode_aligned(pixel_values)
        if aligned_features is None:
            if video_mask is not None and video_mask.any():
                # The placeholders hold pad embeddings: the LLM would read them as the video.
                raise ValueError(
                    f"batch has {int(video_mask.sum())} video positions but neither pixel_values nor aligned_features"
                )
            return embeds, None
        visual, weights = self.fuse(aligned_features)  # (B_v, L_v, D)
        if video_mask is None or int(video_mask.sum()) != visual.shape[0] * visual.shape[1]:
            found = 0 if video_mask is None else int(video_mask.sum())
            raise ValueError(
                f"batch has {found} video positions for {visual.shape[0]} videos x {visual.shape[1]} tokens"
            )
        embeds = embeds.masked_scatter(video_mask.unsqueeze(-1), visual.to(embeds.dtype))
        return embeds, weights

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        video_mask: torch.Tensor | None = None,
        pixel_values: list[torch.Tensor] | None = None,
        labels: torch.Tensor | None = None,
        aligned_features: list[torch.Tensor] | None = None,
    ) -> VideoLMOutput:
        """Language-model loss and logits; `aligned_features` (from a feature cache) replace `pixel_values`."""
        embeds, weights = self.embed_inputs(input_ids, video_mask, pixel_values, aligned_features)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, labels=labels)
        return VideoLMOutput(loss=out.loss, logits=out.logits, fusion_weights=weights)

    # ---- inference -----------------------------------------------------------------------------

    def _check_num_frames(self, num_frames) -> None:
        if num_frames is not None and list(num_frames) != self.processor.frame_counts:
            raise ValueError(
                f"this model samples {self.processor.frame_counts} frames per encoder, got num_frames={list(num_frames)}"
            )

    @torch.no_grad()
    def generate(
        self,
        video,
        prompt_text: str | list[str],
        num_frames: list[int] | None = None,
        start: float | None = None,
        end: float | None = None,
        **generate_kwargs,
    ) -> str | list[str]:
        """Answer a prompt about a video (MERV's quick-start signature).

        Args:
            video: a video file path or `(T, H, W, 3)` uint8 frames, None for text only, or a list of videos
                for a prompt with several `<video>` tags. With a list of prompts, a list with one such entry
                per prompt (and a list of answers is returned).
            prompt_text: text from `get_prompt_builder().get_prompt()`.
            num_frames: per-encoder frame counts, accepted for MERV's API only: a model's frame counts are
                fixed by its encoders, so this checks that they match and changes nothing.
            start, end: optional clip bounds in seconds.
            **generate_kwargs: passed to Hugging Face `generate` (greedy, 128 new tokens by default).
        """
        self._check_num_frames(num_frames)
        single = not isinstance(prompt_text, list)
        if single:
            videos, prompts = [video], [prompt_text]
        else:
            videos, prompts = ([None] * len(prompt_text) if video is None else list(video)), prompt_text
        if len(videos) != len(prompts):
            raise ValueError(f"got {len(videos)} videos for {len(prompts)} prompts")
        items = []
        for v, p in zip(videos, prompts):
            item = self.processor.encode_prompt(p, num_videos=self.processor.num_videos(v))
            item["pixel_values"] = self.processor.videos_pixels(v, start, end)
            items.append(item)
        batch = self.processor.collate(items, padding_side="left")  # generation appends on the right
        embeds, _ = self.embed_inputs(
            batch["input_ids"].to(self.device), batch["video_mask"].to(self.device), batch["pixel_values"]
        )
        kwargs = {
            "max_new_tokens": 128,
            "do_sample": False,
            "pad_token_id": self.tokenizer.pad_token_id,
            "eos_token_id": self.tokenizer.eos_token_id,
            **generate_kwargs,
        }
        out = self.llm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(self.device), **kwargs)
        texts = [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]
        return texts[0] if single else texts

    @torch.no_grad()
    def option_nll(
        self, video, question: str, options: list[str], start: float | None = None, end: float | None = None
    ) -> list[float]:
        """Mean negative log-likelihood of each option as the answer to `question` (lower = more likely).

        The video is encoded once and shared by all options (None scores the text alone); the question
        should not list the options, so scores do not depend on their order.
        """
        num_videos = int(video is not None)
        prompt = f"{VIDEO_TOKEN}\n{question}" if num_videos and VIDEO_TOKEN not in question else question
        items = [
            self.processor.encode([{"from": HUMAN, "value": prompt}, {"from": GPT, "value": o}], num_videos)
            for o in options
        ]
        for it in items:
            it["pixel_values"] = None
        batch = self.processor.collate(items)
        aligned = None
        if num_videos:
            pixels = [with_clip_axis(p) for p in self.processor.preprocess(video, start, end)]  # (1, T_e, 3, S, S)
            aligned = [a.expand(len(options), *a.shape[1:]) for a in self.encode_aligned(pixels)]
        out = self(
            input_ids=batch["input_ids"].to(self.device),
            attention_mask=batch["attention_mask"].to(self.device),
            video_mask=batch["video_mask"].to(self.device),
            aligned_features=aligned,
        )
        return sequence_nll(out.logits, batch["labels"].to(self.device)).tolist()

    # ---- persistence ---------------------------------------------------------------------------

    def stored_by_reference(self, name: str, trained: bool = False) -> bool:
        """Whether the weights under state-dict key (or parameter name) `name` are left out of saved files
        because they are reloaded from the named pretrained source they came from.

        That holds for frozen weights from a named source: an encoder's with `pretrained` set, the LLM's
        base weights when `config.llm.name_or_path` names them (never its LoRA adapters). `trained` weights
        are always stored, wherever they started from. Randomly initialised weights are stored by value.
        """
        if trained:
            return False
        if name.startswith("encoders."):
            return self.config.encoders[int(name.split(".")[1])].pretrained is not None
        return name.startswith("llm.") and self.config.llm.name_or_path is not None and "lora_" not in name

    def load_weights(self, state: dict[str, torch.Tensor], source: str | Path, llm_loaded: bool = False) -> list[str]:
        """Load a (partial) state dict, adding LoRA adapters first when it holds some; return the keys it lacked.

        Keys may be missing only for weights that come from elsewhere: frozen encoders stored by reference,
        the whole LLM when `llm_loaded` (it came from its own directory), or the base weights of a named
        pretrained LLM (adapters must be in `state`). Anything else missing, or any unexpected key, is an
        error naming `source`. Every loading path (saved directories, training checkpoints, a previous stage's
        weights) goes through here.
        """
        if any("lora_" in k for k in state) and not _is_peft(self.llm):
            self.add_lora()
        result = self.load_state_dict(state, strict=False)

        def may_be_missing(key: str) -> bool:
            return self.stored_by_reference(key) or (llm_loaded and key.startswith("llm."))

        bad = [k for k in result.missing_keys if not may_be_missing(k)]
        if bad or result.unexpected_keys:
            raise RuntimeError(
                f"{source} does not match the model: missing {bad[:8]}, unexpected {result.unexpected_keys[:8]}"
            )
        return result.missing_keys

    def save_pretrained(self, path: str | Path, merge_lora: bool = False) -> None:
        """Write `config.json`, `model.safetensors` (projectors, fusion, randomly initialised encoders),
        the LLM and tokenizer under `llm/`, and LoRA adapters under `llm_adapter/` (or merged in)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        llm, lora = self.llm, _is_peft(self.llm)
        if lora and merge_lora:
            llm, lora = copy.deepcopy(llm).merge_and_unload(), False
        if lora:
            base = llm.get_base_model()
            # The base model holds the adapter layers in place; store its original weights under their names.
            state = {k.replace(".base_layer", ""): v for k, v in base.state_dict().items() if "lora_" not in k}
            base.save_pretrained(path / LLM_DIR, state_dict=state)
            llm.save_pretrained(path / ADAPTER_DIR)
        else:
            llm.save_pretrained(path / LLM_DIR)
        self.tokenizer.save_pretrained(path / LLM_DIR)
        tensors = {
            k: v.detach().contiguous().cpu()
            for k, v in self.state_dict().items()
            if not k.startswith("llm.") and not self.stored_by_reference(k)  # the LLM has its own folder
        }
        save_file(tensors, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
        meta = {"config": self.config.to_dict(), "lora": lora, "stage": self.stage}
        (path / CONFIG_NAME).write_text(json.dumps(meta, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: torch.dtype | None = None) -> VideoLM:
        """Load a directory written by `save_pretrained` (no network unless an encoder is stored by hub id)."""
        path = Path(path)
        if not (path / CONFIG_NAME).is_file():
            raise FileNotFoundError(f"{path} is not a saved VideoLM: no {CONFIG_NAME}")
        meta = json.loads((path / CONFIG_NAME).read_text())
        config = VideoLMConfig(**meta["config"])
        # The same loaders as a fresh build, so trust_remote_code and the attention check apply here too.
        tokenizer = load_tokenizer(config.llm, source=path / LLM_DIR)
        llm = load_llm(path / LLM_DIR, config.llm, dtype=dtype)
        if meta.get("lora"):
            from peft import PeftModel

            # Keep adapters in the LLM's dtype, as `add_lora` does (peft would upcast bf16 ones to fp32).
            llm = PeftModel.from_pretrained(llm, path / ADAPTER_DIR, autocast_adapter_dtype=False)
        model = cls(config, llm=llm, tokenizer=tokenizer)
        model.load_weights(load_file(str(path / WEIGHTS_NAME)), path / WEIGHTS_NAME, llm_loaded=True)
        if dtype is not None:
            model.to(dtype)
        model.stage = meta.get("stage")
        return model.eval()


def sequence_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token negative log-likelihood per row over positions whose label is not -100."""
    logits, labels = logits[:, :-1].float(), labels[:, 1:]
    nll = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")  # (B, L-1)
    mask = labels != IGNORE_INDEX
    return (nll * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
