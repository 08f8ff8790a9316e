"""Azure Functions entry point: the app and its blueprints, one per area (see blueprints/)."""
from __future__ import annotations

import azure.functions as func

from blueprints import destinations_api, exports_api, triggers, workers

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for area in (destinations_api, exports_api, workers, triggers):
    app.register_blueprint(area.bp)
