"""Form fields shared by the admin and the dashboard's workspace settings forms."""

from __future__ import annotations

import json

from django import forms
from django.forms.fields import InvalidJSONInput


class PrettyJSONField(forms.JSONField):
    """A JSON object edited as indented text. Blank means ``{}``: the model columns are NOT NULL
    and an empty box is how people clear defaults or a schema."""

    widget = forms.Textarea(
        attrs={"rows": 10, "cols": 80, "spellcheck": "false", "style": "font-family: monospace; width: 40em"}
    )

    def to_python(self, value: object) -> object:
        if isinstance(value, str) and not value.strip():
            return {}
        return super().to_python(value)

    def prepare_value(self, value: object) -> str:
        if isinstance(value, InvalidJSONInput):
            return value  # redisplay what was typed so it can be fixed
        return json.dumps({} if value is None else value, indent=2, ensure_ascii=False, cls=self.encoder)
