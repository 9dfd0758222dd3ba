"""Digest: which articles each address gets for a period, the mail that carries them,
and the run that plans, claims, renders, sends and records.

`periods` (cron ends in Europe/Berlin, labels, archive paths), `render` (the mail of one address,
previews), `runner` (the run: planning, claiming batches of the delivery ledger),
`sending` (the send loop over one SMTP connection). Imports `config`, `store`,
`consent`, `feeds`, `mailer`, `metrics`, `outcomes`, `subscribers`, `templating`.
"""

from service.digest.periods import (
    ARCHIVE_SLUGS,
    archive_path,
    cron_of,
    first_day,
    latest_period,
    next_period_end,
    period_label,
)
from service.digest.render import (
    LIST_NAME,
    DigestRenderer,
    RenderedDigest,
    archive_url,
    capped,
    order_for,
    preview,
)
from service.digest.runner import DigestRunner, RunReport, worker_name
from service.digest.sending import Progress

__all__ = [
    "ARCHIVE_SLUGS",
    "LIST_NAME",
    "DigestRenderer",
    "DigestRunner",
    "Progress",
    "RenderedDigest",
    "RunReport",
    "archive_path",
    "archive_url",
    "capped",
    "cron_of",
    "first_day",
    "latest_period",
    "next_period_end",
    "order_for",
    "period_label",
    "preview",
    "worker_name",
]
