"""The control loop: ``reconcile(request) -> result`` per environment, its status, backoff and windows.

Modules: :mod:`.cron` (maintenance-window cron matcher), :mod:`.windows`, :mod:`.backoff`, :mod:`.status`
(conditions), :mod:`.loop` (the reconcile function), :mod:`.daemon` (everything wired together for
``reconciler run``). This package's ``__init__`` imports nothing, so :mod:`reconciler.config` may use
:mod:`.cron` without an import cycle.
"""
