"""The admin page: static files from web/ (plain ES modules and CSS, no build step), served by the app itself.

`GET /api/console/{*path}`: the shell (index.html) for the bare path, else the file of web/ with that path. The
files are not secret (everything they show comes from the API, which checks the caller), so the route is anonymous;
the page calls `/api/me` first and sends a visitor who is not signed in to App Service's sign-in.

Not `/api/admin/`: Azure Functions refuses every route starting with `admin` (or `runtime`), whatever the route
prefix ("The specified route conflicts with one or more built in routes"), and the function would not load.

Only files found in web/ when the app started are served (regular files with a known type, no hidden names, no
links), looked up by their exact relative path, so no request path can reach anything else; paths shaped like a
traversal (`..`, backslashes, control characters) are refused outright. Every answer carries a strict Content
Security Policy (no inline script or style, nothing from another origin), `X-Content-Type-Options: nosniff`,
`Referrer-Policy: same-origin` and an ETag; browsers revalidate each time (`no-cache`), so a deployment is seen at
once, and an unchanged file costs a 304.
"""
from __future__ import annotations

import hashlib
import html
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import azure.functions as func

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)

PAGE_ROUTE = "console"
PAGE_PATH = f"/api/{PAGE_ROUTE}/"
WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".txt": "text/plain; charset=utf-8",
}
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",  # for browsers that predate frame-ancestors
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_TRAVERSAL = re.compile(r"(^|/)\.\.?(/|$)|\\|[\x00-\x1f\x7f]|//|^/")
MAX_PATH = 200


@dataclass(frozen=True)
class PageFile:
    body: bytes
    content_type: str
    etag: str


def load_files(root: Path = WEB_ROOT) -> dict[str, PageFile]:
    """Relative path (with /) -> file, for every servable file under root: regular files (not links) with a known
    type, no part of the path hidden (starting with a dot)."""
    files: dict[str, PageFile] = {}
    if not root.is_dir():
        return files
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if (path.is_symlink() or not path.is_file() or any(part.startswith(".") for part in relative.parts)
                or any(parent.is_symlink() for parent in path.parents if root in parent.parents)
                or path.suffix.lower() not in CONTENT_TYPES):
            continue
        body = path.read_bytes()
        files[relative.as_posix()] = PageFile(body, CONTENT_TYPES[path.suffix.lower()],
                                              '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


_files: dict[str, PageFile] | None = None
_files_lock = threading.Lock()


def files() -> dict[str, PageFile]:
    global _files
    with _files_lock:
        if _files is None:
            _files = load_files()
        return _files


def _answer(status: int, body: bytes, content_type: str, **headers: str) -> func.HttpResponse:
    return func.HttpResponse(body, status_code=status,
                             headers={**SECURITY_HEADERS, "Content-Type": content_type, **headers})


def _text(status: int, message: str) -> func.HttpResponse:
    return _answer(status, (message + "\n").encode(), "text/plain; charset=utf-8", **{"Cache-Control": "no-store"})


def serve(path: str, if_none_match: str | None = None, table: dict[str, PageFile] | None = None) -> func.HttpResponse:
    """The answer for web/<path> (the shell for "")."""
    table = files() if table is None else table
    if len(path) > MAX_PATH or _TRAVERSAL.search(path):
        return _text(400, "refused: the page's files are named by plain relative paths")
    found = table.get(path or "index.html")
    if found is None:
        return _text(404, "no such file of the admin page")
    cache = {"Cache-Control": "no-cache", "ETag": found.etag}
    if if_none_match and found.etag in [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]:
        return _answer(304, b"", found.content_type, **cache)
    return _answer(200, found.body, found.content_type, **cache)


@bp.route(route=PAGE_ROUTE + "/{*path}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def console_page(req: func.HttpRequest) -> func.HttpResponse:
    return serve(req.route_params.get("path") or "", req.headers.get("if-none-match"))


# --- Mailchimp's OAuth redirect, answered for a browser -----------------------------------------------------------

def wants_html(req: func.HttpRequest) -> bool:
    """A browser navigating (Accept names text/html), rather than a script asking for JSON."""
    return "text/html" in (req.headers.get("accept") or "").lower()


def connected_redirect(destination_id: str) -> func.HttpResponse:
    """Back to the wizard's connect step of this destination, which reads `connected=1` and goes on."""
    target = f"{PAGE_PATH}#/destinations/{quote(destination_id, safe='')}/connect?connected=1"
    return _answer(303, b"", "text/plain; charset=utf-8", Location=target, **{"Cache-Control": "no-store"})


def oauth_problem_page(status: int, message: str) -> func.HttpResponse:
    """Connecting failed: what happened and a way back, as a page (no script; the page's own style sheet)."""
    text = html.escape(message)
    body = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Mailchimp was not connected</title>
<link rel="icon" href="{PAGE_PATH}favicon.svg" type="image/svg+xml">
<link rel="stylesheet" href="{PAGE_PATH}css/app.css">
</head>
<body>
<main id="main" class="page narrow">
<h1>Mailchimp was not connected</h1>
<p class="problem" role="alert">{text}</p>
<p>Nothing was stored. Go back to the destination and try again, or enter an API key instead.</p>
<p><a class="button" href="{PAGE_PATH}#/destinations">Back to export destinations</a></p>
<hr>
<h2 lang="fr">Mailchimp n'a pas été connecté</h2>
<p lang="fr">Rien n'a été enregistré. Revenez à la destination et réessayez, ou saisissez une clé API.</p>
<p lang="fr"><a href="{PAGE_PATH}#/destinations">Retour aux destinations d'exportation</a></p>
</main>
</body>
</html>
"""
    return _answer(status, body.encode("utf-8"), "text/html; charset=utf-8", **{"Cache-Control": "no-store"})
