"""What a valid subscriber is: a municipality with one address, as a form, the API or a
CSV row gives it, and the German words for what is wrong with one. Imports `store`, `text`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    field_validator,
    model_validator,
)

from service import store
from service.text import one_line

BUNDESLAENDER = {
    "01": "Schleswig-Holstein",
    "02": "Hamburg",
    "03": "Niedersachsen",
    "04": "Bremen",
    "05": "Nordrhein-Westfalen",
    "06": "Hessen",
    "07": "Rheinland-Pfalz",
    "08": "Baden-Württemberg",
    "09": "Bayern",
    "10": "Saarland",
    "11": "Berlin",
    "12": "Brandenburg",
    "13": "Mecklenburg-Vorpommern",
    "14": "Sachsen",
    "15": "Sachsen-Anhalt",
    "16": "Thüringen",
}


Name = Annotated[str, Field(min_length=2, max_length=200), AfterValidator(one_line)]
Topic = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(one_line)]


class SubscriberIn(BaseModel):
    """A municipality with one contact address, as a form, the API or a CSV row gives it."""

    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    name: Name
    email: EmailStr
    ags: str | None = Field(default=None, pattern=r"^\d{8}$")
    bundesland: str | None = None
    partner: Name | None = None
    frequency: store.Frequency = store.Frequency.WEEKLY
    topics: list[Topic] = Field(default_factory=list, max_length=20)

    @field_validator("ags", "bundesland", "partner", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ags")
    @classmethod
    def _known_land(cls, value: str | None) -> str | None:
        if value is not None and value[:2] not in BUNDESLAENDER:
            raise ValueError(f"{value!r} is no Amtlicher Gemeindeschlüssel: unknown Land code")
        return value

    @field_validator("bundesland")
    @classmethod
    def _known_bundesland(cls, value: str | None) -> str | None:
        if value is not None and value not in BUNDESLAENDER.values():
            raise ValueError(f"{value!r} is no Bundesland")
        return value

    @model_validator(mode="after")
    def _ags_matches_land(self) -> SubscriberIn:
        if self.ags and self.bundesland and BUNDESLAENDER[self.ags[:2]] != self.bundesland:
            raise ValueError(
                f"AGS {self.ags} lies in {BUNDESLAENDER[self.ags[:2]]}, not in {self.bundesland}"
            )
        return self

    def land(self) -> str | None:
        return self.bundesland or (BUNDESLAENDER[self.ags[:2]] if self.ags else None)


_FIELD_NAMES = {
    "name": "Kommune",
    "email": "E-Mail-Adresse",
    "ags": "Amtlicher Gemeindeschlüssel",
    "bundesland": "Bundesland",
    "partner": "Partnerkommune",
    "frequency": "Häufigkeit",
    "topics": "Themen",
}


def german_error(error: Any) -> str:
    """A validation error as a town hall's staff should read it."""
    field = str(error["loc"][0]) if error["loc"] else ""
    label = _FIELD_NAMES.get(field, "Angaben")
    kind = error["type"]
    if field == "email":
        return f"{label}: bitte eine gültige Adresse angeben, z. B. name@stadt.de"
    if field == "ags":
        return f"{label}: acht Ziffern, z. B. 14713000 für Leipzig"
    if kind == "missing":
        return f"{label}: bitte ausfüllen"
    if kind in {"string_too_short", "string_too_long"}:
        return f"{label}: bitte zwischen 2 und 200 Zeichen"
    return f"{label}: ungültige Angabe"


class PreferencesIn(BaseModel):
    frequency: store.Frequency
    topics: list[Topic] = Field(default_factory=list, max_length=20)
