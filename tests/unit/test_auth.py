"""The caller App Service Authentication vouches for (shared/auth.py): trusted only with authentication on, and
only in App Service's own header shape. Hypothesis searches for headers that would be believed when they must not."""
from __future__ import annotations

import base64
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.auth import ADMIN, OPERATOR, Principal, auth_enabled, encode_principal, principal_from_headers

ALICE = Principal(id="00000000-0000-0000-0000-0000000000a1", name="Alice Admin", email="alice@contoso.example",
                  roles=frozenset({ADMIN}))


def header(doc) -> dict[str, str]:
    return {"x-ms-client-principal": base64.b64encode(json.dumps(doc).encode()).decode()}


def test_a_principal_round_trips_through_app_services_header_shape():
    assert principal_from_headers({"x-ms-client-principal": encode_principal(ALICE)}, True) == ALICE


def test_with_authentication_off_no_header_is_believed():
    assert principal_from_headers({"x-ms-client-principal": encode_principal(ALICE)}, False) is None
    assert [auth_enabled(v) for v in ("True", "true", " TRUE ", "1", "", None, "yes")] == [True, True, True, False, False, False, False]


def test_app_services_real_header_is_read_with_its_own_role_and_name_claim_types():
    doc = {"auth_typ": "aad", "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name",
           "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
           "claims": [{"typ": "http://schemas.microsoft.com/identity/claims/objectidentifier", "val": "oid-1"},
                      {"typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/name", "val": "bob@contoso.example"},
                      {"typ": "preferred_username", "val": "bob@contoso.example"},
                      {"typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role", "val": OPERATOR}]}
    who = principal_from_headers(header(doc), True)
    assert who is not None and who.id == "oid-1" and who.roles == {OPERATOR} and who.is_operator and not who.is_admin
    assert who.label == "bob@contoso.example" and who.kind == "user"


def test_a_machine_token_is_an_app_principal_named_by_its_object_id():
    doc = {"claims": [{"typ": "oid", "val": "sp-7"}, {"typ": "azp", "val": "app-7"}, {"typ": "roles", "val": OPERATOR}]}
    who = principal_from_headers(header(doc), True)
    assert who is not None and who.kind == "app" and who.label == "sp-7" and who.is_operator


def test_a_header_without_an_object_id_is_nobody():
    assert principal_from_headers(header({"claims": [{"typ": "roles", "val": ADMIN}, {"typ": "name", "val": "x"}]}), True) is None


@settings(deadline=None)  # as the suite's other property tests: a loaded machine's pause is no failure
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300).map(lambda b: base64.b64encode(b).decode()),
                 st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                              lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
                              max_leaves=20).map(lambda doc: header(doc)["x-ms-client-principal"])))
def test_any_header_value_gives_a_principal_with_an_id_or_nobody_and_never_raises(value):
    who = principal_from_headers({"x-ms-client-principal": value}, True)
    assert who is None or (isinstance(who.id, str) and who.id and all(isinstance(r, str) for r in who.roles))


def test_a_state_change_needs_x_requested_with_or_a_bearer_token_not_any_authorization_header():
    import azure.functions as func

    from blueprints.http import _cross_site

    def post(**headers: str) -> str | None:
        return _cross_site(func.HttpRequest("POST", "http://127.0.0.1/api/destinations", headers=headers, body=b"{}"))

    assert post() and post(authorization="Basic YTpi") and post(authorization="bearer")
    assert post(authorization="Bearer eyJ0") is None and post(**{"x-requested-with": "XMLHttpRequest"}) is None
    assert post(**{"x-requested-with": "XMLHttpRequest", "sec-fetch-site": "cross-site"})
