"""What the erasure feature needs from infra/, read with pycep-parser as test_infra_security.py does: the `erasures`
drop folder is a container of the segments account (next to `segments`, where the platform writes its exports; blob
soft delete stays off there), its BlobCreated events reach the app account's `erasure-events` queue through the same
system topic as segment files (same delivery and retries), the app holds Storage Blob Data Contributor on that one
container (it reads and deletes the drop files), and Customer Insights may write there only when its principal ID is
given. The queues and tables are checked by name in test_infra.py, the role table of docs/deploy.md in
test_infra_security.py.
"""
from __future__ import annotations

from typing import Any

from shared import config
from shared.events import BLOB_CREATED
from tests.integration.bicep import infra_doc
from tests.integration.test_infra_security import (CONTAINER, QUEUE, SEGMENTS, _account_module, _accessor, _body,
                                                    _containers_of, _module, _output_ref, _resolve, _resources,
                                                    _role_assignments, _role_name, _storage_accounts, _unwrap,
                                                    evaluate)

SEGMENTS_STORAGE, EVENTS = "app/segments-storage.bicep", "app/events.bicep"


def _role(body: dict[str, Any]) -> str:
    return _role_name(body["properties"]["roleDefinitionId"]["function"]["parameters"]["resource_name_1"])


def test_the_erasures_container_is_in_the_segments_account_without_public_access() -> None:
    container, condition, loop = _unwrap(_resources(SEGMENTS_STORAGE)["erasuresContainer"]["config"])
    assert condition is None and loop is None
    assert evaluate(container["name"], SEGMENTS_STORAGE, {}) == config.CONTAINER_ERASURES
    assert container["properties"] == {"publicAccess": "None"}
    assert container["parent"] == _body(SEGMENTS_STORAGE, "segmentsContainer")["parent"] == "blobService"
    # the one account holding both (blob soft delete off: Customer Insights' exports fail with it on)
    [account] = [a for a in _storage_accounts() if config.CONTAINER_ERASURES in a["containers"]]
    assert SEGMENTS in account["containers"] and account["file"] == SEGMENTS_STORAGE
    assert all(s["deleteRetentionPolicy"] == {"enabled": False} for s in account["blob_service"])
    output = infra_doc(SEGMENTS_STORAGE)["outputs"]["erasuresContainerName"]["value"]
    assert evaluate(output, SEGMENTS_STORAGE, {}) == config.CONTAINER_ERASURES


def test_blob_created_events_of_the_erasures_container_reach_the_erasure_events_queue() -> None:
    """A second subscription on the segments account's system topic (an account has one), filtered to the erasures
    container, delivered with the topic's system-assigned identity into `erasure-events`, retried like segments'."""
    events = _module("events")[1]
    assert _output_ref(events["erasuresContainerName"]) == ("segmentsStorage", "erasuresContainerName")
    assert _output_ref(events["erasureQueueName"]) == ("storage", "erasureEventsQueueName")
    assert _resolve(EVENTS, "erasuresContainerName") == [config.CONTAINER_ERASURES]
    assert _resolve(EVENTS, "erasureQueueName") == [config.QUEUE_ERASURE_EVENTS]

    resource = _resources(EVENTS)["erasureCreated"]
    assert resource["type"] == "Microsoft.EventGrid/systemTopics/eventSubscriptions"
    subscription = _unwrap(resource["config"])[0]
    assert subscription["parent"] == "topic"
    assert _accessor(_body(EVENTS, "topic")["properties"]["source"]) == ["segmentsAccount", "id"]
    properties = subscription["properties"]
    assert properties["eventDeliverySchema"] == "EventGridSchema"  # shared/events.py reads eventType and subject
    assert properties["filter"]["includedEventTypes"] == [BLOB_CREATED]
    subject = properties["filter"]["subjectBeginsWith"].replace("${erasuresContainerName}", config.CONTAINER_ERASURES)
    assert subject == f"/blobServices/default/containers/{config.CONTAINER_ERASURES}/blobs/"
    assert subject.startswith("/blobServices/default/containers/erasures/")
    assert "destination" not in properties, "delivery without the topic's identity cannot pass the storage firewall"
    delivery = properties["deliveryWithResourceIdentity"]
    assert delivery["identity"] == {"type": "SystemAssigned"}
    destination = delivery["destination"]
    assert destination["endpointType"] == "StorageQueue"
    assert _accessor(destination["properties"]["resourceId"]) == ["storageAccount", "id"]
    assert destination["properties"]["queueName"] == "erasureQueueName"
    segments = _body(EVENTS, "segmentCreated")["properties"]
    assert properties["retryPolicy"] == segments["retryPolicy"]
    assert properties.get("deadLetterDestination") == segments.get("deadLetterDestination")
    assert destination["properties"]["queueMessageTimeToLiveInSeconds"] == (
        segments["deliveryWithResourceIdentity"]["destination"]["properties"]["queueMessageTimeToLiveInSeconds"])
    assert subscription["dependsOn"] == ["erasureQueueSender"], "created once the topic may send into the queue"


def test_the_topic_may_add_messages_to_the_erasure_events_queue_only() -> None:
    resources = _resources(EVENTS)
    queue = _unwrap(resources["erasureQueue"]["config"])[0]
    assert resources["erasureQueue"]["existing"] and resources["erasureQueue"]["type"] == QUEUE
    assert queue["name"] == "erasureQueueName"
    sender = _body(EVENTS, "erasureQueueSender")
    assert sender["scope"] == "erasureQueue"
    assert _accessor(sender["properties"]["principalId"]) == ["topic", "identity", "principalId"]
    assert _role(sender) == "Storage Queue Data Message Sender"
    topic_roles = [a for a in _role_assignments() if a["file"] == EVENTS]
    assert sorted((a["role"], a["scope"]) for a in topic_roles) == [
        ("Storage Queue Data Message Sender", "erasureQueue"), ("Storage Queue Data Message Sender", "queue")]


def test_the_app_may_read_and_delete_drop_files_in_the_erasures_container_only() -> None:
    app = [a for a in _role_assignments() if a["file"] == "app/identity.bicep"
           and a["scope_type"] == CONTAINER and _account_module(a["file"], a["scope"]) == "segmentsStorage"]
    by_container = {tuple(_containers_of(a)): a["role"] for a in app}
    assert by_container == {(config.CONTAINER_ERASURES,): "Storage Blob Data Contributor",
                            (SEGMENTS,): "Storage Blob Data Reader"}
    assert _output_ref(_module("identity")[1]["erasuresContainerName"]) == ("segmentsStorage", "erasuresContainerName")
    container = _unwrap(_resources("app/identity.bicep")["erasuresContainer"]["config"])[0]
    assert container["parent"] == "segmentsBlobService"


def test_customer_insights_may_write_into_the_erasures_container_when_its_principal_is_given() -> None:
    body, condition, _ = _unwrap(_resources(SEGMENTS_STORAGE)["customerInsightsErasuresWriter"]["config"])
    assert condition is not None, "only when its principal ID is given"
    assert body["scope"] == "erasuresContainer"
    assert _role(body) == "Storage Blob Data Contributor"
    assert _accessor(body["properties"]["principalId"]) == ["customerInsightsPrincipalId"]
