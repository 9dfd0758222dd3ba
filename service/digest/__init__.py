"""Digest: which articles each address gets for a period, the mail that carries them,
and the run that plans, claims, renders, sends and records.

`periods` (cron ends in Europe/Berlin, labels), `render` (the mail of one address,
previews), `runner` (the send loop over the delivery ledger). Imports `config`, `store`,
`consent`, `feeds`, `mailer`, `metrics`, `outcomes`, `subscribers`, `templating`.
"""

from service.digest.periods import cron_of, latest_period, next_period_end, period_label
from service.digest.render import LIST_NAME, DigestRenderer, RenderedDigest, order_for, preview
from service.digest.runner import DigestRunner, Progress, RunReport, worker_name

__all__ = [
    "LIST_NAME",
    "DigestRenderer",
    "DigestRunner",
    "Progress",
    "RenderedDigest",
    "RunReport",
    "cron_of",
    "latest_period",
    "next_period_end",
    "order_for",
    "period_label",
    "preview",
    "worker_name",
]
