"""A small standard cron matcher for maintenance windows (no I/O, no clock).

Five fields, ``minute hour day-of-month month day-of-week``, with the usual forms: ``*``, ``5``, ``1-5``,
``*/15``, ``10-40/10``, lists ``1,15,30``, month names ``jan``..``dec`` and day names ``sun``..``sat``; day of
week ``0`` and ``7`` are both Sunday (standard cron, unlike APScheduler 3's ``from_crontab``, which counts from
Monday). When both day fields are restricted, a day matches if either matches (as in Vixie cron). The macros
``@hourly``, ``@daily`` (``@midnight``), ``@weekly``, ``@monthly`` and ``@yearly`` (``@annually``) are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

_MONTHS = {
    m: i
    for i, m in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], start=1)
}
_DAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_MACROS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}
_MINUTE = timedelta(minutes=1)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),
)


class CronError(ValueError):
    """A cron expression that cannot be parsed; the message names the field."""


@dataclass(frozen=True)
class CronSpec:
    """A parsed cron expression: the allowed values of each field."""

    expr: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is "*"
    any_weekday: bool  # day of week is "*"

    def matches(self, at: datetime) -> bool:
        """Whether the minute of ``at`` (in its own time zone) is a start time of this expression."""
        if at.minute not in self.minutes or at.hour not in self.hours or at.month not in self.months:
            return False
        dom = at.day in self.days
        dow = (at.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _value(text: str, lo: int, hi: int, names: dict[str, int], field: str) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    try:
        v = int(text)
    except ValueError:
        raise CronError(f"{field}: {text!r} is not a number{' or a name' if names else ''}") from None
    if not lo <= v <= hi:
        raise CronError(f"{field}: {v} is outside {lo}-{hi}")
    return v


def _field(text: str, lo: int, hi: int, names: dict[str, int], field: str) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        if not part:
            raise CronError(f"{field}: empty list element in {text!r}")
        rng, _, stride_text = part.partition("/")
        stride = 1
        if stride_text:
            stride = _value(stride_text, 1, hi - lo + 1, {}, field)
        if rng == "*":
            start, end = lo, hi
        elif "-" in rng:
            a, b = rng.split("-", 1)
            start, end = _value(a, lo, hi, names, field), _value(b, lo, hi, names, field)
            if start > end:
                raise CronError(f"{field}: range {rng!r} runs backwards")
        else:
            start = _value(rng, lo, hi, names, field)
            end = hi if stride_text else start
        out.update(range(start, end + 1, stride))
    return frozenset(out)


def parse_cron(expr: str) -> CronSpec:
    """Parse a five-field cron expression (or a macro); raises CronError naming the bad field."""
    text = _MACROS.get(expr.strip().lower(), expr)
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(parts)}")
    sets = [_field(p, lo, hi, names, name) for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return CronSpec(
        expr=expr,
        minutes=sets[0],
        hours=sets[1],
        days=sets[2],
        months=sets[3],
        weekdays=weekdays,
        any_day=parts[2] == "*",
        any_weekday=parts[4] == "*",
    )


def _floor_minute(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(second=0, microsecond=0)


def window_open_at(spec: CronSpec, duration: timedelta, at: datetime, tz: tzinfo) -> bool:
    """Whether ``at`` lies in a window that starts at a time matching ``spec`` (in ``tz``) and lasts ``duration``.

    A window starting at minute ``s`` covers ``[s, s + duration)``. ``at`` must be time-zone aware. Minutes are
    stepped in UTC and matched in ``tz``, so daylight-saving changes neither skip nor repeat a minute.
    """
    t = _floor_minute(at)
    earliest = at - duration
    while t > earliest:
        if spec.matches(t.astimezone(tz)):
            return True
        t -= _MINUTE
    return False


def next_start_after(spec: CronSpec, at: datetime, tz: tzinfo, within: timedelta) -> datetime | None:
    """The first window start strictly after ``at`` and no later than ``at + within``, or None."""
    t = _floor_minute(at) + _MINUTE
    end = at + within
    while t <= end:
        if spec.matches(t.astimezone(tz)):
            return t
        t += _MINUTE
    return None
