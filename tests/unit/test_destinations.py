import pytest

from shared.auth import ADMIN, OPERATOR, Principal
from shared.destinations import ExportUser, InvalidDestination, merge_patch, new_destination, updated_destination

VALID = {
    "displayName": "Newsletter",
    "consent": {"accepted": True},
    "audienceId": "a1b2c3d4e5",
    "mailchimp": {"apiKey": "secret-us6"},
    "mapping": {"email": "EmailAddress", "mergeFields": {"FNAME": "FirstName"}},
    "segments": ["HighValueCustomers", "highvaluecustomers", "Churners"],
}


def problems(body):
    with pytest.raises(InvalidDestination) as caught:
        new_destination(body, "admin@contoso")
    return {p["field"]: p["message"] for p in caught.value.problems}


def test_valid_destination_records_who_consented_and_dedupes_segments():
    change = new_destination(VALID, "admin@contoso")
    d = change.destination
    assert d.consent_accepted and d.consent_by == "admin@contoso" and d.consent_at
    assert d.segments == ("HighValueCustomers", "Churners")
    assert d.tag_for("Churners") == "Churners"
    assert d.status_for_new is None and d.schedule_enabled and d.export_on_arrival
    assert change.api_key == "secret-us6" and not change.create_missing_merge_fields


def test_public_view_never_contains_the_key():
    shown = new_destination(VALID, "x").destination.public()
    assert "secret-us6" not in str(shown)
    assert shown["mailchimp"] == {"connected": False, "method": "none"}


def test_without_an_api_key_the_destination_waits_for_oauth():
    change = new_destination({k: v for k, v in VALID.items() if k != "mailchimp"}, "x")
    assert change.api_key is None and change.destination.credential_kind == "none"


def test_missing_consent_is_refused_with_what_to_do():
    found = problems({**VALID, "consent": {"accepted": False}})
    assert "accept the data-privacy consent" in found["consent.accepted"]


def test_each_bad_field_is_named():
    found = problems({**VALID, "displayName": " ", "segments": [], "statusForNew": "unsubscribed",
                      "mapping": {"mergeFields": {"first_name": "FirstName"}}, "mailchimp": {"key": "x"},
                      "segment": ["typo"], "createMissingMergeFields": "yes"})
    assert set(found) == {"displayName", "segments", "statusForNew", "mapping.email", "mapping.mergeFields.first_name",
                          "mailchimp.apiKey", "segment", "createMissingMergeFields"}
    assert "is not a destination field" in found["segment"]


def test_body_must_be_an_object():
    assert "(body)" in problems(["not", "an", "object"])


def test_merge_patch_merges_objects_removes_nulls_and_replaces_lists():
    target = {"mapping": {"email": "Email", "mergeFields": {"FNAME": "First", "LNAME": "Last"}}, "segments": ["A", "B"],
              "statusForNew": "pending"}
    patch = {"mapping": {"mergeFields": {"LNAME": None, "PHONE": "Phone"}}, "segments": ["C"], "statusForNew": None}
    assert merge_patch(target, patch) == {"mapping": {"email": "Email", "mergeFields": {"FNAME": "First", "PHONE": "Phone"}},
                                          "segments": ["C"]}


def test_withdrawing_consent_records_who_and_when_and_keeps_everything_else():
    current = new_destination(VALID, "admin@contoso").destination
    change = updated_destination(current, {"consent": {"accepted": False}}, "auditor@contoso")
    d = change.destination
    assert not d.consent_accepted and d.consent_by == "auditor@contoso"
    assert d.public()["consent"] == {"accepted": False, "withdrawnBy": "auditor@contoso", "withdrawnAt": d.consent_at}
    assert (d.id, d.segments, d.mapping, d.created_at) == (current.id, current.segments, current.mapping, current.created_at)
    assert not change.recheck and change.api_key is None


def test_a_patch_that_keeps_consent_keeps_who_gave_it():
    current = new_destination(VALID, "admin@contoso").destination
    d = updated_destination(current, {"displayName": "Renamed", "consent": {"accepted": True}}, "other").destination
    assert d.display_name == "Renamed" and d.consent_by == "admin@contoso" and d.consent_at == current.consent_at


def test_changing_the_mapping_or_asking_for_merge_fields_means_asking_mailchimp_again():
    current = new_destination(VALID, "x").destination
    assert updated_destination(current, {"mapping": {"mergeFields": {"LNAME": "LastName"}}}, "x").recheck
    assert updated_destination(current, {"createMissingMergeFields": True}, "x").recheck
    assert not updated_destination(current, {"segments": ["Churners"]}, "x").recheck


def test_a_patch_is_validated_like_a_create_and_names_the_field():
    current = new_destination(VALID, "x").destination
    with pytest.raises(InvalidDestination) as caught:
        updated_destination(current, {"mapping": {"email": None}, "statusForNew": "cleaned"}, "x")
    assert {p["field"] for p in caught.value.problems} == {"mapping.email", "statusForNew"}


# --- export users ---------------------------------------------------------------------------------------------------

def principal(oid: str = "0b0b0b0b-0000-4000-8000-0000000000e1", email: str | None = "Oscar@Contoso.example",
              *roles: str) -> Principal:
    return Principal(id=oid, name="Oscar", email=email, roles=frozenset(roles or {OPERATOR}))


def test_export_users_are_kept_normalised_once_each_and_shown():
    users = [{"email": " Oscar@Contoso.EXAMPLE ", "name": " Oscar "}, {"id": "0D0D0D0D-0000-4000-8000-0000000000A9"},
             {"email": "oscar@contoso.example"}, {"id": "0d0d0d0d-0000-4000-8000-0000000000a9", "name": "again"}]
    d = new_destination({**VALID, "exportUsers": users}, "admin@contoso").destination
    assert d.export_users == (ExportUser(email="oscar@contoso.example", name="Oscar"),
                              ExportUser(id="0D0D0D0D-0000-4000-8000-0000000000A9"))
    assert d.public()["exportUsers"] == [{"id": None, "email": "oscar@contoso.example", "name": "Oscar"},
                                         {"id": "0D0D0D0D-0000-4000-8000-0000000000A9", "email": None, "name": None}]
    assert d.created_by == d.updated_by == "admin@contoso"
    assert new_destination(VALID, "x").destination.export_users == ()


@pytest.mark.parametrize("users, field, said", [
    ("oscar@contoso.example", "exportUsers", "must be a list"),
    ([{"email": f"p{i}@contoso.example"} for i in range(101)], "exportUsers", "at most 100"),
    (["oscar@contoso.example"], "exportUsers[0]", "must be an object"),
    ([{}], "exportUsers[0]", "must be an object"),
    ([{"name": "Oscar"}], "exportUsers[0]", 'by "id"'),
    ([{"email": "oscar@contoso"}], "exportUsers[0].email", "not a valid address"),
    ([{"email": "oscar\u200b@contoso.example"}], "exportUsers[0].email", "invisible character"),
    ([{"email": 7}], "exportUsers[0].email", "text"),
    ([{"id": "has space"}], "exportUsers[0].id", "object ID"),
    ([{"id": "x" * 129}], "exportUsers[0].id", "object ID"),
    ([{"email": "a@contoso.example", "name": "n" * 201}], "exportUsers[0].name", "200"),
    ([{"email": "a@contoso.example", "role": "admin"}], "exportUsers[0]", "must be an object"),
])
def test_export_users_are_checked(users, field, said):
    found = problems({**VALID, "exportUsers": users})
    assert said in found[field], found


def test_a_hundred_export_users_are_accepted_and_a_patch_replaces_the_list():
    hundred = [{"email": f"p{i}@contoso.example"} for i in range(100)]
    d = new_destination({**VALID, "exportUsers": hundred}, "admin@contoso").destination
    assert len(d.export_users) == 100
    changed = updated_destination(d, {"exportUsers": [{"id": "o1"}]}, "second@contoso").destination
    assert changed.export_users == (ExportUser(id="o1"),) and changed.updated_by == "second@contoso"
    assert changed.created_by == "admin@contoso" and changed.consent_by == "admin@contoso"
    kept = updated_destination(changed, {"displayName": "Renamed"}, "x").destination
    assert kept.export_users == changed.export_users
    assert updated_destination(kept, {"exportUsers": None}, "x").destination.export_users == ()


def test_admins_operate_every_destination_operators_only_those_naming_them():
    d = new_destination({**VALID, "exportUsers": [{"email": "oscar@contoso.example"}, {"id": "machine-7"}]}, "x").destination
    assert d.operable_by(principal())  # by address, letter case ignored
    assert d.operable_by(principal("MACHINE-7", None))  # by object ID (a machine has no address)
    assert not d.operable_by(principal("someone-else", "someone@contoso.example"))
    assert not d.operable_by(Principal(id="x", name="x", email="oscar@contoso.example", roles=frozenset()))  # no role
    assert d.operable_by(principal("admin-1", "ada@contoso.example", ADMIN))
    assert not new_destination(VALID, "x").destination.operable_by(principal())


def test_an_export_user_with_an_object_id_is_matched_by_it_alone():
    """Sign-in addresses can be reassigned; an entry naming an object ID is not satisfied by an address that matches."""
    d = new_destination({**VALID, "exportUsers": [{"id": "oid-oscar", "email": "oscar@contoso.example"}]}, "x").destination
    assert d.operable_by(principal("oid-oscar", "oscar.renamed@contoso.example"))
    assert not d.operable_by(principal("oid-newcomer", "oscar@contoso.example"))


# --- names and the stored document are bounded (Table storage: 64 KiB a property, 1 MiB a record) ------------------


def test_a_column_or_segment_name_of_more_than_255_characters_is_refused_naming_the_field():
    said = problems({**VALID, "mapping": {"email": "E" * 40_000, "mergeFields": {"FNAME": "F" * 256}},
                     "segments": ["S" * 2_000] * 3 + ["Fine"]})
    assert "at most 255 characters (a column name); this one has 40,000" in said["mapping.email"]
    assert "at most 255 characters" in said["mapping.mergeFields.FNAME"]
    assert "at most 255 characters (a segment name); this one has 2,000" in said["segments[0]"]
    assert {"segments[1]", "segments[2]"} <= set(said) and "segments[3]" not in said
    fine = new_destination({**VALID, "mapping": {"email": "E" * 255, "mergeFields": {"FNAME": "😀" * 255}},
                            "segments": ["S" * 255, "é" * 255]}, "x").destination
    assert fine.mapping.email == "E" * 255 and fine.segments == ("S" * 255, "é" * 255)


def test_a_mapping_too_large_to_store_is_refused_whatever_the_length_of_each_name():
    many = {f"F{i}": "😀" * 255 for i in range(60)}  # 60 names of 255 characters, each two UTF-16 units
    said = problems({**VALID, "mapping": {"email": "Email", "mergeFields": many}})
    assert set(said) == {"mapping.mergeFields"}
    assert "at most 20,000 are stored" in said["mapping.mergeFields"] and "map fewer merge fields" in said["mapping.mergeFields"]


class CountingName(str):
    """A segment name that counts how often it is looked at."""

    looks = 0

    def strip(self, *chars):
        CountingName.looks += 1
        return super().strip(*chars)


@pytest.mark.parametrize("name", ["Segment{}", "a/{}"])  # valid names (each once), or all invalid
def test_100000_segment_names_are_refused_naming_the_limit_without_looking_at_one(name):
    # each name was checked against a set rebuilt from the names kept so far: 20,000 names took 15 s of CPU
    CountingName.looks = 0
    said = problems({**VALID, "segments": [CountingName(name.format(i)) for i in range(100_000)]})
    assert said == {"segments": "at most 50 segments per destination (100,000 were sent)"}
    assert CountingName.looks == 0


def test_50_segment_names_are_kept_once_each_in_any_letter_case():
    names = [f"Segment{i}" for i in range(50)]
    assert new_destination({**VALID, "segments": names}, "x").destination.segments == tuple(names)
    assert new_destination({**VALID, "segments": names[:25] + [n.upper() for n in names[:25]]},
                           "x").destination.segments == tuple(names[:25])
    assert "segments" in problems({**VALID, "segments": names + ["One more"]})


def test_re_adding_erased_addresses_is_off_unless_an_admin_turns_it_on_and_a_patch_can_turn_it_off():
    created = new_destination(VALID, "x").destination
    assert created.re_add_erased is False and created.public()["reAddErased"] is False
    on = updated_destination(created, {"reAddErased": True}, "y").destination
    assert on.re_add_erased is True and on.public()["reAddErased"] is True
    assert updated_destination(on, {"reAddErased": None}, "y").destination.re_add_erased is False  # removed: default
    assert new_destination({**VALID, "reAddErased": True}, "x").destination.re_add_erased is True
    assert "must be true or false" in problems({**VALID, "reAddErased": "yes"})["reAddErased"]
