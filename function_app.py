"""Azure Functions entry point: the app and its blueprints, one per area (see blueprints/)."""
from __future__ import annotations

import azure.functions as func

from blueprints import destinations_api, exports_api, triggers, workers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(destinations_api.bp)
app.register_functions(exports_api.bp)
app.register_functions(workers.bp)
app.register_functions(triggers.bp)
