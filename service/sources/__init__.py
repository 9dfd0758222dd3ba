"""Sources: the places news comes from, polled by the scheduler.

`records` holds the `sources` table and its queries (the store's part), `fetch` the HTTP
client, `parse` formats and entries, `poller` the polling. Import the modules themselves;
this package re-exports nothing so that importing `records` stays cheap.
"""
