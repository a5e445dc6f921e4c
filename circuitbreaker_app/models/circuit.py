"""The circuit model: one breaker's definition and its durable state."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models, router, transaction
from django.utils.translation import gettext_lazy as _

from circuitbreaker_app import probe_targets
from circuitbreaker_app.core import CircuitConfig, State, validate_fields
from circuitbreaker_app.core import config as core_config
from circuitbreaker_app.models.definition import (
    DECISION_FIELDS,
    DEFINITION_FIELDS,
    translate_message,
    validate_circuit_name,
)
from circuitbreaker_app.models.masking import mask_url


class Circuit(models.Model):
    """One breaker: how it decides (definition) and where it is now (state)."""

    class WindowType(models.TextChoices):
        COUNT = core_config.WINDOW_COUNT, _("last N calls")
        TIME = core_config.WINDOW_TIME, _("last N seconds")

    class TrialMode(models.TextChoices):
        LIVE = core_config.TRIAL_LIVE, _("live calls are the trials")
        PROBE = core_config.TRIAL_PROBE, _("only the probe task tries")

    class StateChoices(models.TextChoices):
        CLOSED = State.CLOSED.value, _("closed")
        OPEN = State.OPEN.value, _("open")
        HALF_OPEN = State.HALF_OPEN.value, _("half open")
        FORCED_OPEN = State.FORCED_OPEN.value, _("forced open")
        FORCED_CLOSED = State.FORCED_CLOSED.value, _("forced closed")
        DISABLED = State.DISABLED.value, _("disabled")

    name = models.CharField(
        _("name"), max_length=100, unique=True, validators=[validate_circuit_name]
    )
    description = models.TextField(_("description"), blank=True)

    window_type = models.CharField(
        _("window type"),
        max_length=10,
        choices=WindowType.choices,
        default=core_config.DEFAULT_WINDOW_TYPE,
    )
    window_size = models.PositiveIntegerField(
        _("window size"),
        default=core_config.DEFAULT_WINDOW_SIZE,
        help_text=_("Calls (count window) or seconds (time window) the failure rate covers."),
    )
    minimum_calls = models.PositiveIntegerField(
        _("minimum calls"),
        default=core_config.DEFAULT_MINIMUM_CALLS,
        help_text=_("Calls the window must hold before the rates can open the circuit."),
    )
    failure_rate_threshold = models.FloatField(
        _("failure rate threshold (%)"), default=core_config.DEFAULT_FAILURE_RATE_THRESHOLD
    )
    slow_call_duration = models.FloatField(
        _("slow call duration (s)"),
        null=True,
        blank=True,
        help_text=_("Calls taking at least this long are slow. Empty: never slow."),
    )
    slow_call_rate_threshold = models.FloatField(
        _("slow call rate threshold (%)"),
        default=core_config.DEFAULT_SLOW_CALL_RATE_THRESHOLD,
    )
    wait_duration = models.FloatField(
        _("wait duration (s)"),
        default=core_config.DEFAULT_WAIT_DURATION,
        help_text=_("Seconds the circuit stays open before a trial, for the first open."),
    )
    backoff_multiplier = models.FloatField(
        _("backoff multiplier"),
        default=core_config.DEFAULT_BACKOFF_MULTIPLIER,
        help_text=_("Each consecutive open waits this many times longer."),
    )
    max_wait_duration = models.FloatField(
        _("max wait duration (s)"), default=core_config.DEFAULT_MAX_WAIT_DURATION
    )
    half_open_max_calls = models.PositiveIntegerField(
        _("half-open trial calls"),
        default=core_config.DEFAULT_HALF_OPEN_MAX_CALLS,
        help_text=_("Trials admitted across all processes; that many successes close it."),
    )
    trial_mode = models.CharField(
        _("trial mode"),
        max_length=10,
        choices=TrialMode.choices,
        default=core_config.DEFAULT_TRIAL_MODE,
    )
    trial_lease = models.FloatField(
        _("trial lease (s)"),
        default=core_config.DEFAULT_TRIAL_LEASE,
        help_text=_("A trial whose outcome never arrives frees its permit after this long."),
    )
    probe_url = models.URLField(
        _("probe URL"),
        blank=True,
        max_length=500,
        help_text=_("Optional http(s) URL the probe task GETs; 2xx/3xx means healthy."),
    )
    probe_timeout = models.FloatField(
        _("probe timeout (s)"),
        default=5.0,
        validators=[MinValueValidator(0.001), MaxValueValidator(300.0)],
    )

    state = models.CharField(
        _("state"),
        max_length=20,
        choices=StateChoices.choices,
        default=State.CLOSED.value,
        editable=False,
    )
    generation = models.PositiveBigIntegerField(_("generation"), default=0, editable=False)
    open_count = models.PositiveIntegerField(_("consecutive opens"), default=0, editable=False)
    opened_at = models.DateTimeField(_("opened at"), null=True, editable=False)
    retry_at = models.DateTimeField(_("trial allowed at"), null=True, editable=False)
    changed_at = models.DateTimeField(_("last transition"), null=True, editable=False)
    #: When a forced or disabled state ends by itself (null: until reset).
    forced_until = models.DateTimeField(_("forced until"), null=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("circuit")
        verbose_name_plural = _("circuits")
        permissions = [("force_circuit", _("Can force circuit state"))]

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, actor: Any = None, **kwargs: Any) -> None:
        """Save the definition; an existing row's state columns are never overwritten.

        State changes only through the store's compare-and-set, so a form loaded before a
        transition cannot roll the state back when it is saved. Editing an existing
        circuit's definition writes one audit event with the changed fields (old → new)
        and ``actor``, the acting user (None from code), in the same transaction.
        """
        from circuitbreaker_app import audit, store

        using = kwargs.get("using") or self._state.db or router.db_for_write(Circuit)
        before = None
        if self.pk is not None and not kwargs.get("force_insert"):
            before = (
                Circuit.objects.using(using)
                .filter(pk=self.pk)
                .values("name", "state", "generation", *DEFINITION_FIELDS)
                .first()
            )
        if before is None:
            super().save(*args, **kwargs)
        else:
            editable: tuple[str, ...] = ("name", *DEFINITION_FIELDS)
            if kwargs.get("update_fields") is None:
                kwargs["update_fields"] = [*editable, "updated_at"]
            else:
                editable = tuple(f for f in editable if f in kwargs["update_fields"])
            changes = audit.changes_between(
                before, {field: getattr(self, field) for field in editable}
            )
            with transaction.atomic(using=using):
                super().save(*args, **kwargs)
                audit.record_edit(
                    before["name"],
                    self.pk,
                    before["state"],
                    before["generation"],
                    changes,
                    actor,
                    using,
                )
        store.definition_saved(self)

    def delete(self, *args: Any, actor: Any = None, **kwargs: Any) -> Any:
        """Delete the circuit; its events stay, and one more names ``actor`` and what was
        deleted (see :func:`circuitbreaker_app.audit.circuit_deleted`)."""
        self._cb_actor = actor
        return super().delete(*args, **kwargs)

    @property
    def masked_probe_url(self) -> str:
        """The probe URL with credentials masked (see :func:`mask_url`)."""
        return mask_url(self.probe_url)

    def definition(self) -> dict[str, Any]:
        """The decision settings as a dict (what the cache shares with every process)."""
        return {name: getattr(self, name) for name in DECISION_FIELDS}

    def config(self) -> CircuitConfig:
        """The validated core config of this circuit."""
        return CircuitConfig.from_mapping(self.definition())

    def clean_fields(self, exclude: Any = None) -> None:
        """Django's field checks, with values of the wrong type reported as field errors.

        A field's own cleaning raises TypeError, OverflowError or AttributeError for some
        values (``float(10**400)``, ``int(inf)``, a list as a URL); those become a
        ValidationError on the field, so ``full_clean()`` raises nothing else.
        """
        skip = set(exclude or ())
        odd: dict[str, list[str]] = {}
        for field in self._meta.concrete_fields:
            if field.name in skip:
                continue
            value = getattr(self, field.attname)
            try:
                field.clean(value, self)
            except ValidationError:
                pass  # reported below, with Django's own message
            except (TypeError, ValueError, OverflowError, AttributeError):
                odd[field.name] = [
                    _("Enter a valid value (%(type)s is not accepted here).")
                    % {"type": type(value).__name__}
                ]
                skip.add(field.name)
        try:
            super().clean_fields(exclude=skip)
        except ValidationError as exc:
            raise ValidationError({**exc.message_dict, **odd}) from None
        if odd:
            raise ValidationError(odd)

    def clean(self) -> None:
        """Validate the definition with the core's rules, one message per field."""
        super().clean()
        values = {}
        for name in DECISION_FIELDS:
            value = getattr(self, name)
            if (
                name in {"window_size", "minimum_calls", "half_open_max_calls"}
                and isinstance(value, float)
                and value.is_integer()
            ):
                value = int(value)
            values[name] = value
        errors = validate_fields(values)
        if self.probe_url:
            try:
                probe_targets.check_url(self.probe_url)
            except probe_targets.UnsafeProbeURL as exc:
                errors["probe_url"] = str(exc)
        if errors:
            raise ValidationError(
                {name: [translate_message(message)] for name, message in errors.items()}
            )
