"""partnerpost: feeds and email digests of news about German–Ukrainian municipal partnerships.

The modules follow the flow of the data, each importing only those before it:
`errors`, `metrics`, `templating` (shared, importing nothing) → `config` → `store` →
`ingest`, `feeds` → `mailer` → `subscribers` → `digest` → `scheduler` → `runtime` → `web`, `cli`
(the entry points).
"""
