"""Stop requests and the checkpoint clock (`fpnas_dsl.stopping`)."""

from __future__ import annotations

import os
import signal

import pytest

from fpnas_dsl.stopping import CheckpointClock, StopRequest, describe_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90.0),
        ("90s", 90.0),
        ("5m", 300.0),
        ("1.5h", 5400.0),
        ("250ms", 0.25),
        ("2 min", 120.0),
        ("off", None),
        ("0", None),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "-3s", "1e400", "m"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_describe_duration_round_trips() -> None:
    for seconds in (2.0, 90.0, 300.0, 5400.0, 7200.0):
        assert parse_duration(describe_duration(seconds)) == seconds
    assert describe_duration(None) == "off"


def test_checkpoint_clock() -> None:
    now = [0.0]
    clock = CheckpointClock(10.0, clock=lambda: now[0])
    now[0] = 9.9
    assert not clock.due()
    now[0] = 10.0
    assert clock.due()
    clock.reset()
    assert not clock.due()
    assert not CheckpointClock(None).due()


def test_sigterm_and_sigint_set_the_flag_and_exit_code() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested and stop.exit_code == 143 and stop.signal_name == "SIGTERM"
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C after SIGTERM: a stop request too
        assert stop.exit_code == 130
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C stops at once
    assert signal.getsignal(signal.SIGTERM) is before
