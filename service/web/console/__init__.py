"""The operator console at `/verwaltung`: German, server-rendered, usable without JavaScript.

`cookies` (the signed session, CSRF tokens, notices), `frame` (`render_console`,
`redirect`, the navigation), `access` (`CurrentOperator`, `CheckedForm`, the security
headers, `install`), `auth` (sign-in, sign-out) and one module per page (`overview`,
`kommunen` with `kommune`, `articles` for Beiträge, `preview` for Vorschau, `deliveries` for
Zustellungen). A page is one route: declare `operator: CurrentOperator` (and `form:
CheckedForm` for a POST), then return `render_console(request, "<template>", operator,
**context)` or `redirect(request, "<path>", flash="...")`. Imports `config`, `store`, `ingest`,
`mailer`, `operators`, `digest`, `deliveries`, `templating` and `web.dependencies`.
"""

from fastapi import APIRouter

from service.web.console import articles, auth, deliveries, kommune, kommunen, overview, preview
from service.web.console.access import CheckedForm, CurrentOperator, install
from service.web.console.cookies import PREFIX, console_path
from service.web.console.frame import redirect, render_console

router = APIRouter(prefix=PREFIX)
router.include_router(auth.router)
router.include_router(overview.router)
router.include_router(kommunen.router)
router.include_router(kommune.router)
router.include_router(articles.router)
router.include_router(preview.router)
router.include_router(deliveries.router)

__all__ = [
    "PREFIX",
    "CheckedForm",
    "CurrentOperator",
    "console_path",
    "install",
    "redirect",
    "render_console",
    "router",
]
