"""How records meet a chat template: the template options of a run and one guarded call of the template.

:class:`ChatOptions` holds what a user can set about rendering (docs/chat-templates.md):

* ``chat_template``: a Jinja template (file path or the text itself) that replaces the tokenizer's own, e.g. a
  training template that renders every turn the same way;
* ``kwargs``: extra variables for the template (``enable_thinking``, ``tools``, ``date_string``, ...), passed to
  ``apply_chat_template``;
* ``add_eos``: ``auto`` appends the tokenizer's EOS to a completion that the template does not end with a stop token,
  ``always`` appends it unless the completion already ends with EOS, ``never`` appends nothing;
* ``stop_tokens``: the tokens (strings or ids) a completion may end with, overriding the model's generation config
  (:mod:`plw.data.stops`);
* ``multi_turn``: ``last`` trains the final assistant turn of a conversation with the rest as prompt, ``expand`` makes
  one example per assistant turn, each rendered as the template renders the conversation at that point (the way to
  train every turn of a template that rewrites history, e.g. drops earlier reasoning).

:func:`render` calls the template and turns whatever it raises (``raise_exception``, a ``TypeError`` from a missing
field) into a one-line :class:`~plw.data.errors.RecordError` carrying the template's own message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import RecordError
from .stops import check_stop_tokens

ADD_EOS = ("auto", "always", "never")
MULTI_TURN = ("last", "expand")


@dataclass(frozen=True)
class ChatOptions:
    """Rendering options shared by every record of a run (see the module docstring)."""

    chat_template: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    add_eos: str = "auto"
    multi_turn: str = "last"
    stop_tokens: tuple[str | int, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop_tokens", check_stop_tokens(self.stop_tokens))
        if self.add_eos not in ADD_EOS:
            raise ValueError(f"add_eos must be one of {ADD_EOS}, got {self.add_eos!r}")
        if self.multi_turn not in MULTI_TURN:
            raise ValueError(f"multi_turn must be one of {MULTI_TURN}, got {self.multi_turn!r}")
        if not isinstance(self.kwargs, dict) or not all(isinstance(k, str) for k in self.kwargs):
            raise ValueError(f"chat_template_kwargs must be a mapping of names to values, got {self.kwargs!r}")
        reserved = {"messages", "add_generation_prompt", "tokenize", "chat_template", "continue_final_message"}
        clash = sorted(reserved & set(self.kwargs))
        if clash:
            raise ValueError(f"chat_template_kwargs: {', '.join(clash)} is set by plw, not by the template options")


def read_template(value: str | Path | None) -> str | None:
    """A chat template given as a file path (``.jinja`` or any text file) or as the Jinja text itself."""
    if value is None:
        return None
    text = str(value)
    if "{{" in text or "{%" in text:
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"chat_template: {text}: no such file")
    return path.read_text(encoding="utf-8")


def chat_options(
    chat_template: str | Path | None = None,
    chat_template_kwargs: dict[str, Any] | None = None,
    add_eos: str = "auto",
    multi_turn: str = "last",
    stop_tokens: list[str | int] | tuple[str | int, ...] | None = None,
) -> ChatOptions:
    """:class:`ChatOptions` from the config keys of the same names (a template file is read here, once)."""
    template = read_template(chat_template)
    return ChatOptions(template, dict(chat_template_kwargs or {}), add_eos, multi_turn, stop_tokens)


def has_template(tokenizer: Any, options: ChatOptions) -> bool:
    return bool(options.chat_template or getattr(tokenizer, "chat_template", None))


def render(tokenizer: Any, messages: list[dict], generation_prompt: bool, options: ChatOptions) -> str:
    """The template's text for ``messages``; a template failure becomes a one-line :class:`RecordError`."""
    try:
        text = tokenizer.apply_chat_template(
            messages,
            tokenize=False,
            add_generation_prompt=generation_prompt,
            chat_template=options.chat_template,
            **options.kwargs,
        )
    except Exception as err:  # jinja's TemplateError, TypeError/KeyError/... from the template code
        message = " ".join(str(err).split()) or type(err).__name__
        raise RecordError(f"the chat template failed: {message}") from None
    if not isinstance(text, str):
        raise RecordError(f"the chat template returned {type(text).__name__}, not text")
    return text
