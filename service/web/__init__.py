"""Web: the HTTP face of partnerpost (pages, feed files, the archive, subscriptions, health, admin
API).

Owns routes and HTTP concerns only: conditional requests, caching headers, auth of the admin API,
the answers to requests the routes cannot take. One module per router (`pages`, `archive`, `feeds`,
`subscriptions`, `admin_api`, `operations`), the operator console (`console/`, a package of its
own), what routes depend on in `dependencies`, the page frame in `rendering`, request guards in
`guards`, access-log redaction in `accesslog`, and the assembly in `app`. An entry point: imports
`config`, `clock`, `store`, `ingest`, `feeds`, `consent`, `subscribers`, `operators`, `digest`,
`templating`, `metrics` and `runtime`.
"""

from service.web.app import create_app

__all__ = ["create_app"]
