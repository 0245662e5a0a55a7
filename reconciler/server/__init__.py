"""HTTP: ``/metrics``, ``/healthz``, ``/readyz`` and the JSON API under ``/api/v1`` (see :mod:`.api`)."""
