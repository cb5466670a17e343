"""Prompt templates that wrap a text before it reaches the model."""

from __future__ import annotations

TEXT_FIELD = "{text}"


def format_prompt(template: str | None, text: str) -> str:
    """Put `text` into `template` at every "{text}", or return `text` when there is no template.

    Other braces in the template are kept as written, so templates may contain
    JSON or code.
    """
    if template is None:
        return text
    if TEXT_FIELD not in template:
        raise ValueError(
            f"prompt template {template!r} has no {TEXT_FIELD} field; "
            f"add {TEXT_FIELD} where the text goes, for example 'Review: {TEXT_FIELD}\\nSentiment:'"
        )
    return template.replace(TEXT_FIELD, text)
