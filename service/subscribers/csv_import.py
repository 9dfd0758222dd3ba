"""The operator's CSV import of municipalities: decoding, one row at a time, a report per
line. Imports `subscribers.forms`, `subscribers.optin`, `store`, `consent`."""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import (
    ValidationError,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import consent, store
from service.errors import IngestInputError
from service.subscribers.forms import SubscriberIn, german_error
from service.subscribers.optin import find_or_create_subscriber
from service.text import describe_validation_error

CSV_COLUMNS = ("name", "email", "ags", "bundesland", "partner", "frequency", "topics")


@dataclass
class ImportReport:
    added: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    # The same rejections as the agency's staff read them in the console.
    rejected_german: list[tuple[int, str]] = field(default_factory=list)

    def reject(self, line: int, reason: str, german: str) -> None:
        self.rejected.append((line, reason))
        self.rejected_german.append((line, german))


def _topics(value: str | None) -> list[str]:
    return [t.strip() for t in (value or "").replace("|", ";").split(";") if t.strip()]


# Excel saves "CSV UTF-8" with a byte order mark, and plain "CSV" on a German Windows
# in Windows-1252; try them in that order unless the operator names the encoding.
CSV_ENCODINGS = ("utf-8-sig", "cp1252")


def decode_csv(data: bytes, source: str, encoding: str | None = None) -> tuple[str, str]:
    """The text of a CSV file and the encoding it was read in."""
    if encoding is not None:
        try:
            codecs.lookup(encoding)
        except LookupError as exc:
            raise IngestInputError(source, f"unknown encoding {encoding!r}") from exc
    for candidate in (encoding,) if encoding else CSV_ENCODINGS:
        try:
            return data.decode(candidate), candidate
        except UnicodeDecodeError as exc:
            problem = f"byte {data[exc.start]:#04x} at offset {exc.start}"
    tried = encoding or " nor ".join(CSV_ENCODINGS)
    raise IngestInputError(
        source, f"not {tried} ({problem}); name the file's encoding with --encoding"
    )


async def import_csv(
    sessions: async_sessionmaker[AsyncSession], text: str, now: datetime, source: str = "CSV"
) -> ImportReport:
    """Import addresses the operator vouches for (active at once); bad rows are reported
    with their line and reason, the good ones imported."""
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    missing = {"name", "email"} - set(reader.fieldnames or [])
    if missing:
        names = ", ".join(sorted(missing))
        report.reject(1, f"header lacks the column(s) {names}", f"Kopfzeile: es fehlt {names}")
        return report
    unknown = set(reader.fieldnames or []) - set(CSV_COLUMNS)
    if unknown:
        names = ", ".join(sorted(unknown))
        report.reject(1, f"unknown column(s) {names}", f"Kopfzeile: unbekannte Spalte {names}")
        return report
    valid: list[tuple[int, SubscriberIn]] = []
    rows: list[tuple[int, dict[str, str]]] = []
    try:
        for row in reader:
            rows.append((reader.line_num, row))
    except csv.Error as exc:  # e.g. a field over the csv module's size limit
        raise IngestInputError(source, f"after line {reader.line_num}: {exc}") from exc
    for line, row in rows:
        raw: dict[str, Any] = {k: v for k, v in row.items() if k and v is not None and v.strip()}
        raw["topics"] = _topics(row.get("topics"))
        raw.setdefault("frequency", "weekly")
        try:
            valid.append((line, SubscriberIn.model_validate(raw)))
        except ValidationError as exc:
            german = "; ".join(dict.fromkeys(german_error(error) for error in exc.errors()))
            report.reject(line, describe_validation_error(exc, "row"), german)
    imported = await import_rows(sessions, [data for _, data in valid], now)
    report.added, report.unchanged = imported.added, imported.unchanged
    lines = {data.email: line for line, data in valid}
    for email, reason in imported.refused:
        german = (
            f"{email} hat sich selbst abgemeldet; nur die Adresse selbst kann sich neu anmelden"
        )
        report.reject(lines[email], reason, german)
    report.rejected.sort()
    report.rejected_german.sort()
    return report


@dataclass
class _Imported:
    added: int = 0
    unchanged: int = 0
    refused: list[tuple[str, str]] = field(default_factory=list)


async def import_rows(
    sessions: async_sessionmaker[AsyncSession], rows: list[SubscriberIn], now: datetime
) -> _Imported:
    """Add operator-confirmed addresses (active at once); known addresses stay as they are,
    and one that unsubscribed itself is not subscribed again."""
    result = _Imported()
    async with sessions() as session, session.begin():
        for data in rows:
            existing = await store.address_by_email(session, data.email)
            if existing is not None:
                if existing.status == store.AddressStatus.UNSUBSCRIBED:
                    result.refused.append(
                        (
                            data.email,
                            f"{data.email} unsubscribed itself; only it can subscribe again",
                        )
                    )
                else:
                    result.unchanged += 1
                continue
            subscriber = await find_or_create_subscriber(session, data, now)
            address = await store.add_address(
                session, subscriber, data.email, store.AddressStatus.ACTIVE, now
            )
            await store.add_consent(session, consent.operator_record(address, now))
            result.added += 1
    return result
