"""From plan statements to the commands that execute them, and back.

A plan's identity is migra's statements (what approvals bind to, what progress is counted in); what executes is
each statement's steps (its online-safe rewrite, if any: ``Statement.execution()``). :class:`StepMap` expands
statements into their :class:`~reconciler.model.ExecStep` s (with the timeouts each carries) for :func:`~reconciler.apply.execute_steps` and translates
what committed back into statements: a statement counts as applied when its last step has committed.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from .apply import AppliedStatement
from .model import ExecStep, Statement

Item = Statement | ExecStep | str


@dataclass
class StepMap:
    """The steps of some statements; ``owners[j]`` is the statement index that step ``j`` belongs to."""

    sqls: list[str]
    steps: list[ExecStep]
    owners: list[int]
    _spent: dict[int, timedelta] = field(default_factory=dict)

    @classmethod
    def build(cls, items: Sequence[Item]) -> StepMap:
        sqls: list[str] = []
        steps: list[ExecStep] = []
        owners: list[int] = []
        for i, item in enumerate(items):
            stmt = Statement(item) if isinstance(item, str) else item
            own = (stmt,) if isinstance(stmt, ExecStep) else stmt.execution()
            sqls.append(stmt.sql)
            steps.extend(own)
            owners.extend([i] * len(own))
        return cls(sqls, steps, owners)

    def skip(self, statements: Collection[int]) -> set[int]:
        """The step indexes of ``statements`` (already applied: not to run again)."""
        return {j for j, owner in enumerate(self.owners) if owner in statements}

    def _last(self, j: int) -> bool:
        return j + 1 == len(self.owners) or self.owners[j + 1] != self.owners[j]

    def finished(self, batch: Sequence[AppliedStatement]) -> list[AppliedStatement]:
        """The statements that ``batch`` (committed steps) completed, indexed and named as in the plan.

        Durations add up over a statement's steps; attempts and waits are those of its last step.
        """
        out: list[AppliedStatement] = []
        for a in batch:
            owner = self.owners[a.index] if 0 <= a.index < len(self.owners) else a.index
            spent = self._spent.get(owner, timedelta(0)) + a.duration
            if 0 <= a.index < len(self.owners) and not self._last(a.index):
                self._spent[owner] = spent
                continue
            self._spent.pop(owner, None)
            sql = self.sqls[owner] if 0 <= owner < len(self.sqls) else a.sql
            out.append(AppliedStatement(sql, spent, owner, a.attempts, a.waits))
        return out
