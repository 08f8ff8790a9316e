"""Sample app for devhost's tests. Queue messages carry JSON instructions: sleep, sleep_first_attempt, fail_attempts."""
from __future__ import annotations

import json
import os
import threading
import time

import azure.functions as func

from tests.devhost_app.outbox import record

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
_rendezvous = threading.Barrier(2)
_active_lock = threading.Lock()
_active = 0


@app.route(route="items/{id:int}/{name?}", methods=["GET", "POST"])
def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
    """Reflect what the host passed in, so tests can check routing, params, headers and body."""
    seen = {
        "method": req.method, "url": req.url, "route_params": dict(req.route_params), "params": dict(req.params),
        "body": req.get_body().decode("utf-8"), "header": req.headers.get("x-sample"),
        "function": context.function_name,
    }
    return func.HttpResponse(json.dumps(seen), status_code=201 if req.method == "POST" else 200,
                             mimetype="application/json", headers={"x-echo": "yes"})


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> str:
    return "ok"


@app.route(route="ops/ping", auth_level=func.AuthLevel.ADMIN)
def ops_ping(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(status_code=204)


@app.route(route="files/{*path}", auth_level=func.AuthLevel.ANONYMOUS)
def files(req: func.HttpRequest) -> str:
    return req.route_params.get("path", "<none>")


@app.route(route="settings", auth_level=func.AuthLevel.ANONYMOUS)
def settings(req: func.HttpRequest) -> func.HttpResponse:
    values = {name: os.environ.get(name) for name in ("SAMPLE_FROM_FILE", "SAMPLE_OVERRIDDEN")}
    return func.HttpResponse(json.dumps(values), mimetype="application/json")


@app.route(route="whoami", auth_level=func.AuthLevel.ANONYMOUS)
def whoami(req: func.HttpRequest) -> func.HttpResponse:
    """What App Service Authentication passed on: its headers (any starting x-ms-), the cookie and the setting."""
    seen = {"headers": {name.lower(): value for name, value in req.headers.items() if name.lower().startswith("x-ms-")},
            "authorization": req.headers.get("authorization"), "cookie": req.headers.get("cookie"),
            "WEBSITE_AUTH_ENABLED": os.environ.get("WEBSITE_AUTH_ENABLED")}
    return func.HttpResponse(json.dumps(seen), mimetype="application/json")


@app.route(route="boom", auth_level=func.AuthLevel.ANONYMOUS)
def boom(req: func.HttpRequest) -> func.HttpResponse:
    raise RuntimeError("failing on purpose")


@app.route(route="rendezvous", auth_level=func.AuthLevel.ANONYMOUS)
def rendezvous(req: func.HttpRequest) -> func.HttpResponse:
    """Answers 200 only when a second request arrives while this one waits: proof of concurrent requests."""
    try:
        _rendezvous.wait(timeout=10)
    except threading.BrokenBarrierError:
        return func.HttpResponse("alone", status_code=504)
    return func.HttpResponse("met")


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def work(msg: func.QueueMessage) -> None:
    global _active
    with _active_lock:
        _active += 1
        active = _active
    try:
        body = msg.get_body().decode("utf-8")
        orders = json.loads(body) if body.startswith("{") else {}
        record("work", body=body, id=msg.id, dequeue_count=msg.dequeue_count, active=active, at=time.time())
        time.sleep(orders.get("sleep", 0) + (orders.get("sleep_first_attempt", 0) if msg.dequeue_count == 1 else 0))
        if msg.dequeue_count <= orders.get("fail_attempts", 0):
            raise RuntimeError("failing on purpose")
    finally:
        with _active_lock:
            _active -= 1


@app.timer_trigger(schedule="%TICK_SCHEDULE%", arg_name="timer", use_monitor=True)
def tick(timer: func.TimerRequest) -> None:
    record("tick", past_due=timer.past_due, status=timer.schedule_status, at=time.time())


@app.timer_trigger(schedule="0 0 0 1 1 *", arg_name="timer", run_on_startup=True, use_monitor=False)
def on_startup(timer: func.TimerRequest) -> None:
    record("on_startup", past_due=timer.past_due, status=timer.schedule_status)
