"""The control loop: ``reconcile(request) -> result`` per environment, the controller that schedules it.

Modules: :mod:`.backoff`, :mod:`.result` (request and outcome), :mod:`.board` (the status cache, written through
to the store), :mod:`.loop` (the reconcile function), :mod:`.controller` (scheduling, backoff, Stalled),
:mod:`.daemon` (everything wired together for ``reconciler run``). The status itself
(:mod:`reconciler.status`), maintenance windows (:mod:`reconciler.windows`) and their cron matcher
(:mod:`reconciler.cron`) live a layer below, beside :mod:`reconciler.policy`.
"""
