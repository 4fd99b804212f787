"""PHYRE sidecar against real PHYRE 0.2.2 in .venv-phyre (Python 3.9).

Builds .venv-phyre with scripts/setup_phyre.sh when it is missing; skips only when the machine
has no Python 3.9 at all.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from phyray.sim.phyre import (
    ENV_PYTHON,
    PHYRE_PALETTE,
    TEMPLATE_SETS,
    PhyreError,
    PhyreSidecar,
    PhyreUnavailable,
    index_to_rgb,
    parse_templates,
)

REPO = Path(__file__).resolve().parents[1]

# The 8 object types in the released code's order (docs/paper.md §12 "Object types and templates").
OBJECTS = [
    "dynamic_ball_1",
    "dynamic_ball_2",
    "static_ball",
    "dynamic_bar",
    "dynamic_standing_bars",
    "static_bar",
    "dynamic_jar",
    "dynamic_standingsticks",
]
# 6-template set: one template per pairing of the object pairs {0,1}, {2,3}, {4,5}, {6,7}.
SIX_TEMPLATES = {
    10003: {4, 5, 6, 7},
    10005: {2, 3, 4, 5},
    10016: {2, 3, 6, 7},
    10023: {0, 1, 2, 3},
    10024: {0, 1, 4, 5},
    10053: {0, 1, 6, 7},
}
HELD_OUT = {
    10060: {0, 3, 4, 5},
    10061: {0, 1, 2, 4},
    10062: {0, 1, 2, 7},
    10063: {0, 1, 4, 7},
    10064: {0, 2, 4, 5},
    10065: {2, 4, 5, 6},
    10066: {1, 3, 6, 7},
    10067: {0, 1, 5, 7},
    10068: {1, 2, 3, 7},
    10069: {0, 3, 6, 7},
}
# Featurised-object columns (see PhyreSidecar.simulate).
X, Y, DIAMETER, SHAPE_BALL, RED, GRAY, BLACK, DYNAMIC = 0, 1, 3, 4, 8, 12, 13, 14


@pytest.fixture(scope="module")
def sidecar(phyre_env):
    with PhyreSidecar() as running:
        yield running


# ---------------------------------------------------------------------------------------------
# Template catalogue
# ---------------------------------------------------------------------------------------------


def test_seventy_distinct_templates(sidecar):
    templates = sidecar.describe_templates()
    assert sorted(templates) == list(range(10000, 10070))
    for objects in templates.values():
        assert len(set(objects)) == 4 and set(objects) <= set(OBJECTS)
    assert len({frozenset(objects) for objects in templates.values()}) == 70


@pytest.mark.parametrize("documented", [SIX_TEMPLATES, HELD_OUT], ids=["6-templates", "held-out"])
def test_documented_subsets(sidecar, documented):
    templates = sidecar.describe_templates()
    for template_id, indices in documented.items():
        assert set(templates[template_id]) == {OBJECTS[i] for i in indices}, template_id


def test_template_sets_and_parsing():
    assert TEMPLATE_SETS["6"] == sorted(SIX_TEMPLATES)
    assert TEMPLATE_SETS["heldout"] == sorted(HELD_OUT)
    assert TEMPLATE_SETS["30"] == [t for t in range(10000, 10060) if t % 2 == 0]
    assert TEMPLATE_SETS["60"] == list(range(10000, 10060))
    assert parse_templates("6") == TEMPLATE_SETS["6"]
    assert parse_templates(" 10005, 10001-10003,10005 ") == [10005, 10001, 10002, 10003]
    assert parse_templates("heldout,10000") == TEMPLATE_SETS["heldout"] + [10000]
    for bad in ["", "10070", "9999", "10003-10001", "ten", "10000-"]:
        with pytest.raises(ValueError):
            parse_templates(bad)


# ---------------------------------------------------------------------------------------------
# Simulation
# ---------------------------------------------------------------------------------------------


def test_simulate_layout(sidecar):
    video = sidecar.simulate(10023, seed=3, trial=7)
    frames, objects = video["frames"], video["objects"]
    assert frames.shape == (32, 256, 256) and frames.dtype == np.uint8
    assert video["frames_simulated"] == 32
    n = len(video["object_types"])
    assert objects.shape == (32, n, 15) and objects.dtype == np.float32
    assert video["action"].shape == (3,) and np.all((0 <= video["action"]) & (video["action"] <= 1))

    # Object list: the template's types (static_ball repeats per chain ball), red ball last.
    template_objects = sidecar.describe_templates()[10023]
    assert video["object_types"][-1] == "red_ball"
    assert set(video["object_types"][:-1]) == set(template_objects)
    red = objects[0, -1]
    assert red[RED] == 1 and red[SHAPE_BALL] == 1 and red[DYNAMIC] == 1
    # Colours: dynamic gray, static black, and the flag agrees with the type name.
    for name, features in zip(video["object_types"][:-1], objects[0, :-1], strict=True):
        dynamic = name.startswith("dynamic")
        assert features[DYNAMIC] == dynamic
        assert features[GRAY if dynamic else BLACK] == 1, name

    # Frames hold only white, red, gray and black; the red ball is drawn where PHYRE put it,
    # in image order (row 0 at the top, PHYRE's y is up).
    assert set(np.unique(frames)) <= {0, 1, 5, 6}
    rows, cols = np.nonzero(frames[0] == 1)
    x, y, radius = video["red_ball_px"]
    assert abs(len(rows) - np.pi * radius**2) < 0.2 * np.pi * radius**2
    assert abs(cols.mean() - x) < 2 and abs(rows.mean() - (255 - y)) < 2


def test_deterministic_across_processes(sidecar):
    requests = [(10003, 5, 17), (10053, 0, 0), (10066, 12, 990)]
    first = [sidecar.simulate(*r) for r in requests]
    with PhyreSidecar() as other:
        second = other.simulate_batch(requests)
    for a, b in zip(first, second, strict=True):
        for key in ("frames", "objects", "action", "red_ball_px"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a["object_types"] == b["object_types"]
    # Trials move the red ball, seeds change the scene.
    assert not np.array_equal(first[0]["action"], sidecar.simulate(10003, 5, 18)["action"])
    assert not np.array_equal(
        first[0]["objects"][0, :-1], sidecar.simulate(10003, 6, 17)["objects"][0, :-1]
    )


def test_frames_encoded_in_the_sidecar_are_phyrays_own_bytes(sidecar):
    """The sidecar's zstd frames (what generation stores) are the bytes phyray's encoder makes
    of the raw indices, and decode back to them: a dataset is the same whichever side encoded."""
    from phyray.data.shards import PALETTE8, decode_frames, encode_palette_frames

    assert PALETTE8 in sidecar.frame_codecs  # scripts/setup_phyre.sh installs zstandard
    items = [(10003, 5, 17), (10066, 12, 990)]
    raw = sidecar.simulate_batch(items)
    encoded = sidecar.simulate_batch(items, frames_codec=PALETTE8)
    for plain, packed in zip(raw, encoded, strict=True):
        assert packed["frames"].dtype == np.uint8 and packed["frames"].ndim == 1
        assert packed["frames_shape"] == list(plain["frames"].shape)
        assert packed["frames"].tobytes() == encode_palette_frames(plain["frames"])
        row = {"frames": packed["frames"].tobytes(), "frames_encoding": PALETTE8,
               "frame_shape": [*packed["frames_shape"], 3], "palette": PHYRE_PALETTE.tolist()}
        np.testing.assert_array_equal(decode_frames(row), index_to_rgb(plain["frames"]))
        np.testing.assert_array_equal(packed["objects"], plain["objects"])
    with pytest.raises(PhyreError, match="frames_codec"):
        sidecar.simulate_batch(items[:1], frames_codec="png")


def test_red_ball_never_overlaps(sidecar):
    items = [
        (t, seed, trial) for t in TEMPLATE_SETS["6"] for seed in range(3) for trial in range(5)
    ]
    for (template_id, seed, _), video in zip(items, sidecar.simulate_batch(items), strict=True):
        assert video["placement"] == "heuristic"
        assert sidecar.check_action(template_id, seed, video["action"])
        # Geometric check against every ball (the one shape whose extent the features give):
        # centres at least the sum of radii apart, less 2 px for PHYRE's rasterised test.
        start = video["objects"][0]
        red = start[-1]
        balls = start[:-1][start[:-1, SHAPE_BALL] == 1]
        gap = np.hypot(balls[:, X] - red[X], balls[:, Y] - red[Y]) * 256
        reach = (balls[:, DIAMETER] + red[DIAMETER]) / 2 * 256
        assert np.all(gap >= reach - 2), (template_id, seed)


def test_check_action_rejects_overlap(sidecar):
    video = sidecar.simulate(10023, seed=0, trial=0)
    ball = video["objects"][0, 0]  # dynamic_ball_1
    assert video["object_types"][0] == "dynamic_ball_1"
    on_top = [ball[X], ball[Y], 0.5]
    assert not sidecar.check_action(10023, 0, on_top)
    assert not sidecar.check_action(10023, 0, [0.0, 0.5, 0.5])  # outside the scene


def test_palette_matches_phyre_rgb(sidecar):
    np.testing.assert_array_equal(np.array(sidecar.ping()["palette"]), PHYRE_PALETTE)
    for template_id in (10003, 10023):
        video = sidecar.simulate(template_id, seed=1, trial=2, rgb=True)
        assert video["rgb"].shape == (32, 256, 256, 3)
        np.testing.assert_array_equal(index_to_rgb(video["frames"]), video["rgb"])


# ---------------------------------------------------------------------------------------------
# Failure modes
# ---------------------------------------------------------------------------------------------


def test_missing_interpreter_is_unavailable(monkeypatch):
    monkeypatch.setenv(ENV_PYTHON, "/nonexistent/python3.9")
    with pytest.raises(PhyreUnavailable) as error:
        PhyreSidecar()
    message = str(error.value)
    assert "\n" not in message
    assert "/nonexistent/python3.9" in message and "bash scripts/setup_phyre.sh" in message
    assert "Python 3.9" in message


def test_interpreter_without_phyre_is_unavailable(phyre_env):
    # The main venv's Python 3.11 has no phyre: the sidecar exits at import.
    with pytest.raises(PhyreUnavailable, match="cannot import phyre"):
        PhyreSidecar(python=sys.executable).start()


def test_error_reply_keeps_sidecar_alive(sidecar):
    pid = sidecar.pid
    with pytest.raises(PhyreError, match="template 10070 seed 1 trial 2.*unknown template"):
        sidecar.simulate(10070, 1, 2)
    with pytest.raises(PhyreError, match="template 10071 seed 4 trial 0"):
        sidecar.simulate_batch([(10000, 4, 0), (10071, 4, 0)])
    assert sidecar.simulate(10000, 1, 2)["frames"].shape == (32, 256, 256)
    assert sidecar.pid == pid


def test_killed_sidecar_raises_then_restarts(phyre_env):
    with PhyreSidecar() as sidecar:
        os.kill(sidecar.pid, signal.SIGKILL)
        with pytest.raises(PhyreError, match=r"status -9\).*template 10003 seed 5 trial 1"):
            sidecar.simulate(10003, 5, 1)
        assert sidecar.simulate(10003, 5, 1)["frames"].shape == (32, 256, 256)  # restarted
        # Killed in the middle of a request.
        items = [(10016, seed, trial) for seed in range(20) for trial in range(20)]
        timer = threading.Timer(0.5, lambda: os.kill(sidecar.pid, signal.SIGKILL))
        timer.start()
        with pytest.raises(PhyreError, match="crashed.*template 10016 seed 0"):
            sidecar.simulate_batch(items)
        timer.join()
        assert sidecar.simulate(10003, 5, 1)["frames"].shape == (32, 256, 256)


def test_timeout_raises(phyre_env):
    with PhyreSidecar(timeout=0.05) as sidecar:
        with pytest.raises(PhyreError, match="timed out.*template 10005 seed 2"):
            sidecar.simulate_batch([(10005, 2, trial) for trial in range(50)])
        assert sidecar.pid is None
