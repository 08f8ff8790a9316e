"""Who is signed in: what the admin page asks first, to show the right screens (or "no access")."""
from __future__ import annotations

import azure.functions as func

from blueprints.http import SIGNED_IN, json_answer, requires
from shared.auth import Principal

bp = func.Blueprint(http_auth_level=func.AuthLevel.ANONYMOUS)


@bp.route(route="me", methods=["GET"])
@requires(SIGNED_IN)
def me(req: func.HttpRequest, who: Principal) -> func.HttpResponse:
    """The verified caller: id, name, email, kind and the app roles they hold (an empty list: signed in, no access).
    401 when nobody is signed in (or authentication is off)."""
    return json_answer(who.public())
