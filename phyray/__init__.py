"""phyray: does a video generation model learn physical laws if we scale it?"""

import os

__version__ = "0.1.0"

# MLflow (3.17) phones home for telemetry from a background thread at import; with no network it
# gives up by deleting an environment variable, and a request iterating os.environ at that moment
# in another thread dies with KeyError('_MLFLOW_TELEMETRY_SESSION_ID') (a study over an HTTP store
# failed so, 2026-12-06). phyray's processes make no such calls; set it to "false" to allow them.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
