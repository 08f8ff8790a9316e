"""Azure Functions entry point: the app and its blueprints, one per area (see blueprints/)."""
from __future__ import annotations

import azure.functions as func

from blueprints import destinations_api, erasure_workers, erasures_api, exports_api, me_api, lookups_api, page, retention, triggers, workers

# Every HTTP route is ANONYMOUS at the Functions level: App Service Authentication (Entra ID) stands in front and each
# handler authorizes the caller it verified (blueprints/http.requires); function keys are not the way in.
app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
app.register_functions(destinations_api.bp)
app.register_functions(exports_api.bp)
app.register_functions(erasures_api.bp)
app.register_functions(erasure_workers.bp)
app.register_functions(me_api.bp)
app.register_functions(workers.bp)
app.register_functions(triggers.bp)
app.register_functions(lookups_api.bp)
app.register_functions(page.bp)
app.register_functions(retention.bp)
