"""Prompt formats: turn a conversation into text segments, each marked as prompt or training target.

Training masks labels per segment (only assistant answers and their end-of-turn marker are targets), so
the same segments serve training, generation (`PromptBuilder.get_prompt`) and scoring. Formats come
from the tokenizer's own chat template when it has one, or from the built-in builders for base models.
"""

from __future__ import annotations

from dataclasses import dataclass

HUMAN, GPT = "human", "gpt"
"""The two conversation roles, spelled as LLaVA-format files spell them (`{"from": HUMAN, "value": ...}`)."""
VIDEO_TOKEN = "<video>"
"""Where a video's visual tokens go in a conversation; annotation readers write every media placeholder so."""

# Accepted spellings of the two roles; LLaVA-style files use human/gpt, chat APIs user/assistant.
# Annotation readers and prompt builders both go through `normalize_role`, so they accept the same ones.
_ROLE_ALIASES = {"human": HUMAN, "user": HUMAN, "gpt": GPT, "assistant": GPT, "model": GPT}

VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def normalize_role(role: str) -> str:
    """Map a role spelling to `human` or `gpt`; raise ValueError for anything else."""
    try:
        return _ROLE_ALIASES[role.lower()]
    except (KeyError, AttributeError):
        raise ValueError(f"unknown role {role!r}; expected one of {sorted(_ROLE_ALIASES)}") from None


@dataclass(frozen=True)
class Segment:
    """A piece of rendered conversation text; `target` marks tokens the model is trained to produce."""

    text: str
    target: bool


class PromptFormat:
    """Renders alternating human/gpt turns into segments.

    Args:
        name: `merv` (MERV's base-model format `In: ...\\nOut: ...`), `llama2` (Llama-2 chat),
            `vicuna` (Vicuna v1.1), or `chat_template` (the tokenizer's Jinja template).
        eos_token: text of the end-of-sequence token, appended to every answer so the model learns to stop.
        tokenizer: needed only for `chat_template`.
        system_prompt: optional system text (defaults to Vicuna's for `vicuna`).
    """

    def __init__(self, name: str, eos_token: str, tokenizer=None, system_prompt: str | None = None) -> None:
        if name not in ("merv", "llama2", "vicuna", "chat_template"):
            raise ValueError(f"unknown prompt format {name!r}")
        if name == "chat_template" and getattr(tokenizer, "chat_template", None) is None:
            raise ValueError("prompt format 'chat_template' needs a tokenizer with a chat template")
        self.name = name
        self.eos_token = eos_token
        self.tokenizer = tokenizer
        self.system_prompt = VICUNA_SYSTEM if system_prompt is None and name == "vicuna" else system_prompt

    @property
    def adds_bos(self) -> bool:
        """Whether the caller must prepend BOS (chat templates write their own)."""
        return self.name != "chat_template"

    def segments(self, turns: list[tuple[str, str]], add_generation_prompt: bool = False) -> list[Segment]:
        """Render `(role, message)` turns; with `add_generation_prompt` end ready for the next answer."""
        turns = [(normalize_role(r), m) for r, m in turns]
        for i, (role, _) in enumerate(turns):
            if role != (HUMAN if i % 2 == 0 else GPT):
                raise ValueError(f"turn {i} has role {role!r}: conversations must alternate human, gpt, ...")
        if self.name == "chat_template":
            return self._template_segments(turns, add_generation_prompt)
        out: list[Segment] = []
        for i, (role, msg) in enumerate(turns):
            if role == HUMAN:
                out.append(Segment(self._human(msg, first=i == 0), target=False))
            else:
                out.append(Segment(self._gpt(msg), target=True))
                if self.name == "merv":
                    out.append(Segment("\n", target=False))
        return out

    def _human(self, msg: str, first: bool) -> str:
        msg = msg.strip()
        if self.name == "merv":
            return f"In: {msg}\nOut: "
        if self.name == "vicuna":
            prefix = f"{self.system_prompt} " if first and self.system_prompt else ""
            return f"{prefix}USER: {msg} ASSISTANT: "
        # llama2: the system block sits inside the first instruction.
        system = f"<<SYS>>\n{self.system_prompt}\n<</SYS>>\n\n" if first and self.system_prompt else ""
        return f"[INST] {system}{msg} [/INST] "

    def _gpt(self, msg: str) -> str:
        return f"{msg.strip()}{self.eos_token}"

    def _template_segments(self, turns: list[tuple[str, str]], add_generation_prompt: bool) -> list[Segment]:
        # Render growing prefixes and keep each difference: the human part (with the template's
        # assistant header) is prompt, the assistant part (content + end-of-turn) is target.
        messages = [{"role": "user" if r == HUMAN else "assistant", "content": m} for r, m in turns]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        offset = 1 if self.system_prompt else 0
        out: list[Segment] = []
        rendered = ""
        for i, (role, _) in enumerate(turns):
            upto = messages[: offset + i + 1]
            gen_prompt = role == HUMAN and (i + 1 < len(turns) or add_generation_prompt)
            text = self.tokenizer.apply_chat_template(upto, tokenize=False, add_generation_prompt=gen_prompt)
            if not text.startswith(rendered):
                raise ValueError("the tokenizer's chat template does not render conversations prefix by prefix")
            out.append(Segment(text[len(rendered) :], target=role == GPT))
            rendered = text
        return out

    def render(self, turns: list[tuple[str, str]], add_generation_prompt: bool = False) -> str:
        return "".join(s.text for s in self.segments(turns, add_generation_prompt))


class PromptBuilder:
    """MERV-compatible incremental prompt builder.

    Example:
        >>> builder = model.get_prompt_builder()
        >>> builder.add_turn(role="human", message="What is happening in the video?")
        >>> prompt_text = builder.get_prompt()  # ready for `model.generate(video, prompt_text)`
    """

    def __init__(self, fmt: PromptFormat) -> None:
        self.fmt = fmt
        self.turns: list[tuple[str, str]] = []

    def add_turn(self, role: str, message: str) -> str:
        """Append a turn and return its rendered text.

        Raises:
            ValueError: unknown role, or a role that breaks the human, gpt, ... alternation; the builder
                is left unchanged.
        """
        before = self.fmt.render(self.turns) if self.turns else ""
        turns = [*self.turns, (normalize_role(role), message)]
        rendered = self.fmt.render(turns)  # validates before anything is kept
        self.turns = turns
        return rendered[len(before) :]

    def get_prompt(self) -> str:
        """The conversation so far, ending where the assistant's next answer begins."""
        return self.fmt.render(self.turns, add_generation_prompt=True)
