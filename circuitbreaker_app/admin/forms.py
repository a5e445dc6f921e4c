"""The circuit change form: the definition, with the probe URL shown masked."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import models
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app.models import DEFINITION_FIELDS, Circuit, mask_url


def _formfield(field: models.Field, **kwargs: Any) -> forms.Field | None:
    """Form fields as Django makes them, but a URL typed without a scheme means https."""
    if isinstance(field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return field.formfield(**kwargs)


class CircuitForm(forms.ModelForm):
    """The definition; the probe URL is shown masked, and kept when submitted unchanged."""

    class Meta:
        model = Circuit
        fields = ("name", *DEFINITION_FIELDS)
        formfield_callback = _formfield

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        original = self.instance.probe_url if self.instance.pk else ""
        if original and mask_url(original) != original and "probe_url" in self.fields:
            self.initial["probe_url"] = mask_url(original)
            self.fields["probe_url"].help_text = _(
                "Credentials and query values are masked. Leave the URL as shown to keep "
                "them; type the whole URL to change it."
            )

    def clean_probe_url(self) -> str:
        value = self.cleaned_data.get("probe_url", "")
        original = self.instance.probe_url if self.instance.pk else ""
        if original and value == mask_url(original):
            return original
        return value
