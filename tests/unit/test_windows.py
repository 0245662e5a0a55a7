"""Maintenance windows: a standard cron matcher and the 'inside a window' decision, without a database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from reconciler.config import MaintenanceWindow
from reconciler.cron import CronError, parse_cron
from reconciler.windows import next_window_start, window_open


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def win(cron: str, duration: str, tz: str = "UTC") -> MaintenanceWindow:
    return MaintenanceWindow.model_validate({"cron": cron, "duration": duration, "timezone": tz})


@pytest.mark.parametrize(
    ("expr", "when", "expected"),
    [
        ("0 2 * * *", "2026-03-04T02:00", True),
        ("0 2 * * *", "2026-03-04T02:01", False),
        ("*/15 * * * *", "2026-03-04T10:45", True),
        ("*/15 * * * *", "2026-03-04T10:46", False),
        ("10-40/10 * * * *", "2026-03-04T10:30", True),
        ("10-40/10 * * * *", "2026-03-04T10:50", False),
        ("0 9 * * mon-fri", "2026-03-06T09:00", True),  # a Friday
        ("0 9 * * mon-fri", "2026-03-07T09:00", False),  # a Saturday
        ("0 3 * * 0", "2026-03-08T03:00", True),  # 0 is Sunday, as in standard cron
        ("0 3 * * 7", "2026-03-08T03:00", True),  # so is 7
        ("0 3 * * 1", "2026-03-08T03:00", False),
        ("0 0 1 jan,jul *", "2026-07-01T00:00", True),
        ("0 0 13 * fri", "2026-03-06T00:00", True),  # both day fields restricted: either matches
        ("0 0 13 * fri", "2026-03-05T00:00", False),
        ("@daily", "2026-03-05T00:00", True),
        ("@hourly", "2026-03-05T07:00", True),
    ],
)
def test_cron_matches(expr: str, when: str, expected: bool) -> None:
    assert parse_cron(expr).matches(at(when)) is expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("0 2 * *", "expected 5 fields"),
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("0 24 * * *", "hour: 24 is outside 0-23"),
        ("0 0 * * funday", "day of week"),
        ("5-1 * * * *", "runs backwards"),
        ("*/0 * * * *", "minute"),
        ("1,,2 * * * *", "empty list element"),
    ],
)
def test_cron_errors_name_the_field(expr: str, message: str) -> None:
    with pytest.raises(CronError, match=message):
        parse_cron(expr)


@pytest.mark.parametrize(
    ("when", "expected"),
    [
        ("2026-03-04T01:59", False),
        ("2026-03-04T02:00", True),
        ("2026-03-04T03:59:59", True),
        ("2026-03-04T04:00", False),  # [start, start + duration)
    ],
)
def test_window_spans_its_duration(when: str, expected: bool) -> None:
    assert window_open([win("0 2 * * *", "2h")], at(when)) is expected


def test_window_over_midnight_and_several_windows() -> None:
    windows = [win("0 23 * * *", "3h"), win("30 12 * * sat", "30m")]
    assert window_open(windows, at("2026-03-05T01:30"))
    assert not window_open(windows, at("2026-03-05T02:00"))
    assert window_open(windows, at("2026-03-07T12:45"))  # Saturday
    assert not window_open(windows, at("2026-03-06T12:45"))  # Friday


def test_no_windows_means_always_open_and_every_minute_window_is_too() -> None:
    assert window_open([], at("2026-03-04T13:37"))
    assert window_open([win("* * * * *", "1m")], at("2026-03-04T13:37:59"))


def test_window_in_a_time_zone() -> None:
    # 02:00 in Berlin is 01:00 UTC in winter, 00:00 UTC in summer.
    berlin = [win("0 2 * * *", "1h", "Europe/Berlin")]
    assert window_open(berlin, at("2026-01-10T01:30"))
    assert not window_open(berlin, at("2026-01-10T02:30"))
    assert window_open(berlin, at("2026-07-10T00:30"))
    assert window_open(berlin, datetime(2026, 7, 10, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")))


def test_next_window_start_within_a_horizon() -> None:
    windows = [win("0 2 * * *", "1h")]
    assert next_window_start(windows, at("2026-03-04T01:50"), timedelta(minutes=15)) == at("2026-03-04T02:00")
    assert next_window_start(windows, at("2026-03-04T01:40"), timedelta(minutes=15)) is None


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ({"cron": "0 25 * * *", "duration": "1h"}, "hour: 25"),
        ({"cron": "0 2 * * *", "duration": "30s"}, "between 1m and 31d"),
        ({"cron": "0 2 * * *", "duration": "1h", "timezone": "Mars/Olympus"}, "unknown time zone"),
        ({"cron": "0 2 * * *", "duration": "1h", "every": "day"}, "Extra inputs"),
    ],
)
def test_window_config_errors(window: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MaintenanceWindow.model_validate(window)
