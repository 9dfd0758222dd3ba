"""The operator console at `/verwaltung`: German, server-rendered, usable without JavaScript.

`cookies` (the signed session, CSRF tokens, notices), `frame` (`render_console`,
`redirect`, the navigation), `access` (`CurrentOperator`, `CheckedForm`, the security
headers, `install`), `auth` (sign-in, sign-out) and one module per page (`overview`,
`deliveries`). A page is one route: declare `operator: CurrentOperator` (and `form:
CheckedForm` for a POST), then return `render_console(request, "<template>", operator,
**context)` or `redirect(request, "<path>", flash="...")`. Imports `config`, `store`, `operators`,
`digest`, `deliveries`, `templating` and `web.dependencies`.
"""

from fastapi import APIRouter

from service.web.console import auth, deliveries, overview
from service.web.console.access import CheckedForm, CurrentOperator, install
from service.web.console.cookies import PREFIX, console_path
from service.web.console.frame import redirect, render_console

router = APIRouter(prefix=PREFIX)
router.include_router(auth.router)
router.include_router(overview.router)
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
