"""HTTP: the JSON API under ``/api/v1`` (:mod:`.api`), ``/metrics``, ``/healthz``, ``/readyz`` and the operator's
page at ``/`` (:mod:`.page`), one FastAPI app (:mod:`.app`) served by uvicorn (:mod:`.http`)."""
