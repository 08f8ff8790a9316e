"""/3.0/lists/{list_id} and its merge fields."""
from __future__ import annotations

from typing import Any

from .call import Call
from .merge_fields import TAG, TYPES
from .problems import invalid_fields
from .request_body import Problems, boolean
from .shapes import audience_json


def get_list(call: Call, list_id: str) -> dict[str, Any]:
    """`stats.total_contacts` only with `include_total_contacts=true`: "Requires include_total_contacts query parameter
    to be included" (the API description, ../shared/mailchimp, Lists > Get list info)."""
    audience = call.audience(list_id)
    with audience.lock:
        answer = audience_json(audience, call.base_url)
    if (call.request.param("include_total_contacts") or "").lower() != "true":
        del answer["stats"]["total_contacts"]
    return answer


def list_merge_fields(call: Call, list_id: str) -> dict[str, Any]:
    audience = call.audience(list_id)
    count, offset = call.page()
    wanted_type = call.request.param("type")
    required = call.request.param("required")
    with audience.lock:
        fields = [f for f in audience.merge_fields if (wanted_type is None or f.type == wanted_type)
                  and (required is None or f.required == (required.lower() == "true"))]
        return {"merge_fields": [f.to_json(list_id) for f in fields[offset:offset + count]],
                "list_id": list_id, "total_items": len(fields)}


def create_merge_field(call: Call, list_id: str) -> dict[str, Any]:
    audience = call.audience(list_id)
    body = call.body()
    problems: Problems = []
    name, type_, tag = body.get("name"), body.get("type"), body.get("tag")
    if not isinstance(name, str) or not name.strip():
        problems.append(("name", "Send the merge field's name (a non-empty string)"))
    if type_ not in TYPES:
        problems.append(("type", f"Send one of {', '.join(TYPES)} (got {type_!r})"))
    if tag is not None and not (isinstance(tag, str) and TAG.match(tag.upper())):
        problems.append(("tag", "Send up to 10 letters, digits or underscores (e.g. FNAME), or leave it out"))
    attributes: dict[str, Any] = {"required": boolean(body, "required", problems)}
    for key, kind in (("default_value", str), ("help_text", str), ("options", dict), ("display_order", int)):
        if key in body:
            if not isinstance(body[key], kind) or isinstance(body[key], bool):
                problems.append((key, f"Send {key} as {kind.__name__}"))
            attributes[key] = body[key]
    choices = (body.get("options") or {}).get("choices") if isinstance(body.get("options"), dict) else None
    if type_ in ("radio", "dropdown") and not (isinstance(choices, list) and choices):
        problems.append(("options.choices", f"A {type_} field needs options.choices: the list of allowed values"))
    if "public" in body:
        attributes["public"] = boolean(body, "public", problems)
    if problems:
        raise invalid_fields(problems)
    with audience.lock:
        merge_field = audience.add_merge_field(name.strip(), type_, tag.upper() if tag else None, **attributes)
        return merge_field.to_json(list_id)


ROUTES = [
    ("GET", "/lists/{list_id}", get_list),
    ("GET", "/lists/{list_id}/merge-fields", list_merge_fields),
    ("POST", "/lists/{list_id}/merge-fields", create_merge_field),
]
