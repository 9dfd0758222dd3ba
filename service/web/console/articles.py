"""The console's Beiträge (`/verwaltung/beitraege`): find, edit and hide articles.

Owns the article list (search in title, place and topics, a topic and a status filter,
pages of `PAGE_SIZE`), the edit form for title, teaser and topics (checked by
`ingest.ArticleEdit`, the rules of imported articles) and the hide / show-again buttons,
all POSTed to the article's own address.
A change asks the runtime for a feed rebuild at once. Imports `store`, `ingest`,
`web.dependencies` and the console's `access` and `frame`.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from starlette.datastructures import FormData

from service import ingest, store
from service.ingest.model import MAX_TEASER, MAX_TITLE
from service.web.console.access import CheckedForm, CurrentOperator
from service.web.console.frame import redirect, render_console
from service.web.dependencies import AppRuntime, Session, Sessions

router = APIRouter()

PAGE_SIZE = 50
STATUS_FILTERS = {"": None, "sichtbar": False, "verborgen": True}
FIELD_ERRORS = {
    "title": f"Der Titel darf nicht leer sein und höchstens {MAX_TITLE} Zeichen haben.",
    "teaser": f"Der Anreißer darf nicht leer sein und höchstens {MAX_TEASER} Zeichen haben.",
    "topics": "Höchstens 20 Themen, jedes mit 1 bis 100 Zeichen.",
}


def _list_query(form: FormData) -> str:
    """The list's search, carried through a hide or show form, as a query string."""
    keys = ("q", "thema", "status", "seite")
    return urlencode({key: str(form.get(key)) for key in keys if form.get(key)})


def _back(request: Request, form: FormData, article_id: int, flash: str) -> Response:
    """To the edit page when the form came from there, else to the list as it was."""
    if form.get("von") == "bearbeiten":
        return redirect(request, f"beitraege/{article_id}", flash=flash)
    return redirect(request, "beitraege", flash=flash, query=_list_query(form))


@router.get("/beitraege", response_class=HTMLResponse, include_in_schema=False)
async def article_list(
    request: Request,
    operator: CurrentOperator,
    session: Session,
    q: str = "",
    thema: str = "",
    status: str = "",
    seite: int = 1,
) -> HTMLResponse:
    hidden = STATUS_FILTERS.get(status)
    page_number = max(seite, 1)
    found = await store.search_articles(
        session,
        q,
        topic=thema or None,
        hidden=hidden,
        offset=(page_number - 1) * PAGE_SIZE,
        limit=PAGE_SIZE,
    )
    pages = max(1, -(-found.total // PAGE_SIZE))
    query = {"q": q, "thema": thema, "status": status if status in STATUS_FILTERS else ""}
    return render_console(
        request,
        "beitraege",
        operator,
        articles=found.articles,
        total=found.total,
        page=page_number,
        pages=pages,
        query=query,
        page_url=lambda n: "?" + urlencode({k: v for k, v in query.items() if v} | {"seite": n}),
        topics=await store.all_topics(session),
    )


async def _edit_page(
    request: Request,
    operator: store.Operator,
    article: store.Article,
    *,
    values: dict[str, str] | None = None,
    errors: list[str] | None = None,
) -> HTMLResponse:
    values = values or {
        "title": article.title,
        "teaser": article.teaser,
        "topics": "\n".join(article.topics),
    }
    return render_console(
        request,
        "beitraege_bearbeiten",
        operator,
        status_code=422 if errors else 200,
        article=article,
        values=values,
        errors=errors or [],
    )


def _not_found(request: Request, operator: store.Operator) -> HTMLResponse:
    return render_console(
        request,
        "message",
        operator,
        status_code=404,
        section="beitraege",
        heading="Beitrag nicht gefunden",
        paragraphs=["Diesen Beitrag gibt es nicht (mehr)."],
    )


@router.get("/beitraege/{article_id}", response_class=HTMLResponse, include_in_schema=False)
async def edit_form(
    request: Request, operator: CurrentOperator, session: Session, article_id: int
) -> HTMLResponse:
    article = await store.article_by_id(session, article_id)
    if article is None:
        return _not_found(request, operator)
    return await _edit_page(request, operator, article)


@router.post("/beitraege/{article_id}", response_class=HTMLResponse, include_in_schema=False)
async def change(
    request: Request,
    operator: CurrentOperator,
    form: CheckedForm,
    sessions: Sessions,
    runtime: AppRuntime,
    article_id: int,
) -> Response:
    """The edit form's save, or a hide (`aktion=verbergen`) or show (`aktion=zeigen`) button."""
    action = form.get("aktion")
    if action in ("verbergen", "zeigen"):
        hidden = action == "verbergen"
        return await _set_hidden(request, form, sessions, runtime, article_id, hidden)
    async with sessions() as session, session.begin():
        article = await store.article_by_id(session, article_id)
        if article is None:
            return _not_found(request, operator)
        values = {name: str(form.get(name) or "") for name in ("title", "teaser", "topics")}
        topics = [line.strip() for line in values["topics"].splitlines() if line.strip()]
        try:
            edit = ingest.ArticleEdit(title=values["title"], teaser=values["teaser"], topics=topics)
        except ValidationError as exc:
            fields = dict.fromkeys(str(error["loc"][0]) for error in exc.errors())
            errors = [FIELD_ERRORS.get(name, name) for name in fields]
            return await _edit_page(request, operator, article, values=values, errors=errors)
        changed = store.edit_article(
            article, edit.title, edit.teaser, list(dict.fromkeys(edit.topics))
        )
    if not changed:
        return redirect(request, f"beitraege/{article_id}", flash="Nichts geändert.")
    runtime.request_feed_refresh()
    return redirect(request, f"beitraege/{article_id}", flash="Gespeichert.")


async def _set_hidden(
    request: Request,
    form: FormData,
    sessions: Sessions,
    runtime: AppRuntime,
    article_id: int,
    hidden: bool,
) -> Response:
    async with sessions() as session, session.begin():
        article = await store.article_by_id(session, article_id)
        if article is None:
            return _back(request, form, article_id, "Diesen Beitrag gibt es nicht (mehr).")
        title = article.title
        changed = store.set_hidden(article, hidden)
    if changed:
        runtime.request_feed_refresh()
    done = "verborgen" if hidden else "wieder sichtbar"
    return _back(request, form, article_id, f"„{title}“ ist {done}.")
