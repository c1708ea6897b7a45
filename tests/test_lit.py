"""`MERVLitModule` and the callbacks in isolation: what a rank does with an unreadable batch, the gradient norm
of sharded gradients, and when sample generations are logged."""

import math
from types import SimpleNamespace

import pytest
import torch
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy

from merv.lit import GenerationLogger, MERVLitModule
from merv.models import VideoLMConfig
from merv.video import VideoDecodeError

# What `VideoTextDataset.collate` returns when every video of a batch was unreadable.
EMPTY_BATCH = {"indices": torch.zeros(0, dtype=torch.long), "num_samples": 0, "num_skipped": 2, "skipped_files": []}


@pytest.fixture(scope="module")
def module() -> MERVLitModule:
    lit = MERVLitModule(VideoLMConfig.tiny(), stage="finetune")
    lit.configure_model()
    return lit


def fake_trainer(world_size: int = 1, **extra) -> SimpleNamespace:
    return SimpleNamespace(world_size=world_size, global_rank=1, **extra)


def test_an_unreadable_batch_is_skipped_on_one_process(module):
    module._trainer = fake_trainer(world_size=1)
    assert module.training_step(EMPTY_BATCH, 0) is None


@pytest.mark.parametrize("feature_cache", [None, "features/"])
def test_an_unreadable_batch_still_joins_the_other_ranks_backward(module, monkeypatch, feature_cache):
    module._trainer = fake_trainer(world_size=2)
    monkeypatch.setitem(module.hparams, "feature_cache", feature_cache)
    module.model.zero_grad(set_to_none=True)
    if feature_cache:  # the other ranks read cached features: this one must not run the encoders either
        monkeypatch.setattr(module.model, "encode_aligned", lambda px: pytest.fail("encoders ran"))
    loss = module.training_step(EMPTY_BATCH, 0)
    assert loss is not None and loss.item() == 0.0
    loss.backward()
    trainable = {n: p for n, p in module.model.named_parameters() if p.requires_grad}
    # Every gradient the other ranks all-reduce exists here too, and adds nothing.
    assert [n for n, p in trainable.items() if p.grad is None] == []
    assert all(torch.count_nonzero(p.grad) == 0 for p in trainable.values())


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_text_only_batch_still_gives_every_trainable_parameter_a_gradient_with_several_ranks(module, world_size):
    module._trainer = fake_trainer(world_size=world_size)
    module.model.zero_grad(set_to_none=True)
    conversation = [{"from": "human", "value": "Name a colour."}, {"from": "gpt", "value": "red"}]
    batch = module.model.prepare_batch([{"video": None, "conversations": conversation}])
    module.log = lambda *args, **kwargs: None  # no trainer to log to
    loss = module.training_step(batch, 0)
    loss.backward()
    visual = [p for n, p in module.model.named_parameters() if p.requires_grad and n.startswith("projectors.")]
    if world_size == 1:  # one process: nothing waits for the visual modules
        assert all(p.grad is None for p in visual)
    else:  # the other ranks all-reduce these gradients: they exist here too, and add nothing
        assert visual and all(p.grad is not None and torch.count_nonzero(p.grad) == 0 for p in visual)
    del module.log


def test_grad_norm_adds_up_the_shards_of_every_rank_under_fsdp(module, monkeypatch):
    trainable = [p for p in module.model.parameters() if p.requires_grad]
    for p in trainable:
        p.grad = torch.ones_like(p)
    local = math.sqrt(sum(p.numel() for p in trainable))
    logged, groups = {}, []

    def all_reduce(tensor, group=None):  # two ranks whose shards hold equal squares
        groups.append(group)
        tensor.mul_(2)

    monkeypatch.setattr(module, "log", lambda key, value, **kw: logged.__setitem__(key, float(value)))
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)

    module._trainer = fake_trainer(strategy=object())  # DDP-like: full gradients on every rank
    module.on_before_optimizer_step(None)
    assert logged["train/grad_norm"] == pytest.approx(local) and groups == []

    module._trainer = fake_trainer(strategy=FSDPStrategy(), model=SimpleNamespace(process_group="shard-group"))
    module.on_before_optimizer_step(None)
    assert logged["train/grad_norm"] == pytest.approx(local * math.sqrt(2)) and groups == ["shard-group"]
    for p in trainable:  # a rank whose shard holds no gradient still takes part in the sum
        p.grad = None
    module.on_before_optimizer_step(None)
    assert groups == ["shard-group"] * 2


class RecordingModel:
    """Stands in for `VideoLM` in `GenerationLogger`: records the videos it is asked about."""

    training = True

    def __init__(self) -> None:
        self.videos: list[str] = []

    def get_prompt_builder(self):
        return SimpleNamespace(add_turn=lambda role, message: None, get_prompt=lambda: "prompt")

    def generate(self, video, prompt, **kwargs) -> str:
        self.videos.append(video)
        if video.endswith("broken.mp4"):
            raise VideoDecodeError(video, "corrupt")
        if video.endswith("long.mp4"):
            raise ValueError("the prompt is 3000 tokens, more than max_length=2048")
        return "a circle"

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self


def run_generation_logger(steps: list[int], strategy=None, every_n_steps: int = 2) -> RecordingModel:
    records = [
        {"video": "ok.mp4", "conversations": [{"from": "human", "value": "?"}, {"from": "gpt", "value": "a"}]},
        {"video": "broken.mp4", "conversations": [{"from": "human", "value": "?"}]},
        {"video": "long.mp4", "conversations": [{"from": "human", "value": "?"}]},
        {"video": ["a.mp4", "b.mp4"], "conversations": [{"from": "human", "value": "<video> <video>?"}]},
    ]
    trainer = SimpleNamespace(
        global_step=steps[0],
        is_global_zero=True,
        strategy=strategy or object(),
        datamodule=SimpleNamespace(val_records=records),
        logger=None,
    )
    module = SimpleNamespace(model=RecordingModel())
    callback = GenerationLogger(every_n_steps=every_n_steps, num_samples=4)
    callback.on_train_start(trainer, module)
    for i, step in enumerate(steps):
        trainer.global_step = step
        callback.on_train_batch_end(trainer, module, None, {}, i)
    return module.model


def test_generation_is_logged_once_per_optimizer_step_with_gradient_accumulation():
    # Three batches per optimizer step: the global step repeats while gradients accumulate.
    steps = [0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4]
    model = run_generation_logger(steps)
    # Steps 2 and 4, once each; never at step 0, before anything was learnt. Failures cost a line only.
    assert model.videos == ["ok.mp4", "broken.mp4", "long.mp4"] * 2


def test_generation_failures_cost_a_line_and_multi_clip_records_are_left_out():
    videos = run_generation_logger([0, 1, 2]).videos
    assert videos == ["ok.mp4", "broken.mp4", "long.mp4"]  # each failed alone; the two-clip record was not shown


def test_sharded_means_no_rank_holds_every_weight():
    """Only DeepSpeed's ZeRO-3 shards weights; FSDP does unless told NO_SHARD; a subclass counts like its base."""
    from lightning.pytorch.strategies import DDPStrategy

    from merv.lit.strategies import is_sharded

    def deepspeed(stage_3: bool):
        return type("DeepSpeedStrategy", (), {"zero_stage_3": stage_3})()

    assert is_sharded(deepspeed(True)) and not is_sharded(deepspeed(False))
    assert is_sharded(FSDPStrategy()) and is_sharded(type("MyFSDP", (FSDPStrategy,), {})())
    assert not is_sharded(FSDPStrategy(sharding_strategy="NO_SHARD"))
    assert not is_sharded(DDPStrategy()) and not is_sharded(object())


def test_generation_resumed_at_a_logged_step_waits_for_the_next_one():
    assert run_generation_logger([4, 4, 4, 5]).videos == []


def test_generation_is_skipped_under_sharded_strategies():
    assert run_generation_logger([0, 1, 2, 3, 4], strategy=FSDPStrategy()).videos == []


def _bfloat16_module(stage: str, **trainer) -> MERVLitModule:
    config = VideoLMConfig.tiny()
    config.llm.dtype = "bfloat16"
    lit = MERVLitModule(config, stage=stage)
    lit._trainer = SimpleNamespace(**trainer)
    lit.configure_model()
    return lit


@pytest.mark.parametrize("stage", ["finetune", "lora"])
def test_mixed_precision_trains_float32_weights_of_a_bfloat16_llm(stage):
    lit = _bfloat16_module(stage, precision="bf16-mixed", strategy=SimpleNamespace())
    trained = {p.dtype for p in lit.model.parameters() if p.requires_grad}
    assert trained == {torch.float32}
    if stage == "lora":  # the frozen base stays in bf16: only what the optimizer updates needs fp32
        assert {p.dtype for p in lit.model.llm.parameters() if not p.requires_grad} == {torch.bfloat16}


def test_fsdp_mixed_precision_stores_the_whole_llm_in_float32():
    # A LoRA layer's frozen base and its adapters share an FSDP unit, which holds one dtype.
    lit = _bfloat16_module("lora", precision="bf16-mixed", strategy=FSDPStrategy())
    assert {p.dtype for p in lit.model.llm.parameters()} == {torch.float32}


@pytest.mark.parametrize(
    "precision, strategy",
    [("bf16-true", SimpleNamespace()), ("bf16-mixed", DeepSpeedStrategy.__new__(DeepSpeedStrategy))],
    ids=["bf16-true", "deepspeed"],
)
def test_half_precision_weights_stay_where_asked_or_where_deepspeed_keeps_masters(precision, strategy):
    lit = _bfloat16_module("finetune", precision=precision, strategy=strategy)
    assert {p.dtype for p in lit.model.llm.parameters()} == {torch.bfloat16}


def module_groups(keys) -> set[str]:
    """`encoders.<i>`, `projectors`, `fusion`, `llm` for state-dict keys."""
    return {".".join(k.split(".")[:2]) if k.startswith("encoders.") else k.split(".")[0] for k in keys}


def test_frozen_weights_from_a_named_source_are_stored_by_reference_in_checkpoints_and_saved_models(tmp_path):
    """One rule for `.ckpt` files and `save_pretrained`: frozen weights with a named source are left out, trained
    and randomly initialised ones are kept."""
    from safetensors import safe_open

    lit = MERVLitModule(VideoLMConfig.tiny(), stage="align")
    lit.configure_model()
    model = lit.model
    model.config.encoders[0].pretrained = "org/siglip"  # as if loaded from there
    model.config.llm.name_or_path = "org/llm"

    def checkpointed() -> set[str]:
        checkpoint = {"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}
        lit.on_save_checkpoint(checkpoint)
        return module_groups(k.removeprefix("model.") for k in checkpoint["state_dict"])

    assert checkpointed() == {"encoders.1", "projectors", "fusion"}
    model.save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), framework="pt") as f:
        assert module_groups(f.keys()) == {"encoders.1", "projectors", "fusion"}  # the LLM has its own folder
    model.set_trainable("finetune")  # a trained LLM is stored whatever it started from
    assert checkpointed() == {"encoders.1", "projectors", "fusion", "llm"}
