"""PHYRE combinatorial scenes (templates 10000-10069) from phyray, through a Python 3.9 sidecar.

PHYRE 0.2.2 has wheels only up to Python 3.9, so it lives in its own venv (`.venv-phyre`, built
by `bash scripts/setup_phyre.sh`) and runs as a long-lived subprocess,
`phyray/sim/phyre_sidecar/sidecar.py`, whose docstring specifies the protocol (length-prefixed
JSON headers followed by raw array bytes). This module is the main-side half:

* the template catalogue: `TEMPLATE_SETS` (the paper's 6 / 30 / 60 training sets and the
  held-out 10) and `parse_templates`;
* PHYRE's colour table, `PHYRE_PALETTE`, and `index_to_rgb`, so frames decode without phyre;
* `PhyreSidecar`, the client: `simulate(template_id, seed, trial)` returns numpy arrays.

    with PhyreSidecar() as phyre:
        video = phyre.simulate(10003, seed=5, trial=17)
        rgb = index_to_rgb(video["frames"])  # (32, 256, 256, 3) uint8

`PhyreUnavailable` means there is no usable Python 3.9 environment (one line saying what to
run); `PhyreError` means a request failed, crashed the sidecar or timed out (the message names
template, seed and trial). After a crash the next request starts a fresh sidecar.
"""

from __future__ import annotations

import json
import os
import select
import struct
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
SIDECAR_SCRIPT = Path(__file__).resolve().parent / "phyre_sidecar" / "sidecar.py"
PHYRE_VENV_PYTHON = REPO_ROOT / ".venv-phyre" / "bin" / "python"
ENV_PYTHON = "PHYRAY_PHYRE_PYTHON"  # override: an interpreter that can `import phyre`
EXIT_NO_PHYRE = 3  # the sidecar's exit status when phyre cannot be imported

# The paper's recording: the first 32 frames, one every 20 Box2D steps (60 steps/s), on the
# stock 256 x 256 PHYRE scene.
FRAMES = 32
STRIDE = 20
SCENE_SIZE = 256

# ---------------------------------------------------------------------------------------------
# Template catalogue
# ---------------------------------------------------------------------------------------------

FIRST_TEMPLATE, LAST_TEMPLATE = 10000, 10069
TEMPLATE_SETS: dict[str, list[int]] = {
    # One template per pairing of object pairs, covering every two-object interaction.
    "6": [10003, 10005, 10016, 10023, 10024, 10053],
    "30": list(range(10000, 10060, 2)),
    "60": list(range(10000, 10060)),
    "heldout": list(range(10060, 10070)),  # out-of-template evaluation
}


def parse_templates(spec: str) -> list[int]:
    """Template ids from a set name ("6", "30", "60", "heldout") or a comma list of ids and
    inclusive ranges ("10000-10009,10023"); names may appear in the list too.

    Returns the ids in the given order without duplicates; raises ValueError on anything
    outside 10000-10069.
    """
    ids: list[int] = []
    for token in (t.strip() for t in spec.split(",")):
        if token in TEMPLATE_SETS:
            ids.extend(TEMPLATE_SETS[token])
        elif "-" in token.strip("-"):
            low, high = (_template_id(part, spec) for part in token.split("-", 1))
            if low > high:
                raise ValueError(f"empty template range {token!r} in {spec!r}")
            ids.extend(range(low, high + 1))
        else:
            ids.append(_template_id(token, spec))
    return list(dict.fromkeys(ids))


def _template_id(token: str, spec: str) -> int:
    try:
        value = int(token)
    except ValueError:
        names = ", ".join(TEMPLATE_SETS)
        raise ValueError(
            f"bad template {token!r} in {spec!r}: expected a set name ({names}), an id or a range"
        ) from None
    if not FIRST_TEMPLATE <= value <= LAST_TEMPLATE:
        raise ValueError(
            f"template {value} in {spec!r} is outside {FIRST_TEMPLATE}-{LAST_TEMPLATE}"
        )
    return value


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------

# phyre.vis.WAD_COLORS, the table phyre.observations_to_uint8_rgb indexes, by colour index.
PHYRE_PALETTE = np.array(
    [
        [255, 255, 255],  # 0 white: background
        [243, 79, 70],  # 1 red: the red (user) ball
        [107, 206, 187],  # 2 green
        [24, 119, 242],  # 3 blue
        [75, 74, 164],  # 4 purple
        [185, 202, 210],  # 5 gray: dynamic objects
        [0, 0, 0],  # 6 black: static objects and walls
        [252, 223, 227],  # 7 light red
    ],
    dtype=np.uint8,
)


def index_to_rgb(indices: np.ndarray, palette: np.ndarray = PHYRE_PALETTE) -> np.ndarray:
    """Colour-index frames (..., H, W) -> RGB (..., H, W, 3) uint8.

    Sidecar frames are already in image order (row 0 at the top), so this equals PHYRE's
    observations_to_uint8_rgb on its raw (bottom-up) rasters.
    """
    return np.take(palette, indices, axis=0)


# ---------------------------------------------------------------------------------------------
# Errors and the interpreter
# ---------------------------------------------------------------------------------------------


class PhyreUnavailable(RuntimeError):
    """No Python 3.9 environment with phyre; the message is one line saying what to run."""


class PhyreError(RuntimeError):
    """A sidecar request failed, crashed the sidecar or timed out."""


def _unavailable(reason: str) -> PhyreUnavailable:
    return PhyreUnavailable(
        f"PHYRE is unavailable ({reason}): run `bash scripts/setup_phyre.sh` (needs a Python 3.9,"
        f" e.g. `pyenv install 3.9`) or set {ENV_PYTHON} to a Python 3.9 with phyre==0.2.2"
    )


def find_phyre_python() -> Path:
    """The interpreter that runs the sidecar: $PHYRAY_PHYRE_PYTHON, else .venv-phyre's."""
    override = os.environ.get(ENV_PYTHON)
    python = Path(override) if override else PHYRE_VENV_PYTHON
    if not python.exists():
        raise _unavailable(f"{python} does not exist")
    return python


def _sidecar_env() -> dict[str, str]:
    # The 3.9 interpreter must not pick up the main (3.11) environment's modules, e.g. through
    # a PYTHONPATH that Ray or a venv activation set.
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


# ---------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------

LENGTH = struct.Struct(">I")
STDERR_TAIL_BYTES = 2000


class PhyreSidecar:
    """A long-lived PHYRE sidecar process (a context manager; starts on first use).

    Args:
        python: the interpreter to run it with (default: `find_phyre_python()`).
        timeout: seconds allowed per request (a batch is one request) before the sidecar is
            killed and PhyreError raised.
        startup_timeout: seconds allowed for starting it and importing phyre.

    Raises PhyreUnavailable at construction when the interpreter does not exist, and on start
    when it cannot import phyre.
    """

    def __init__(
        self,
        python: str | os.PathLike | None = None,
        timeout: float = 60.0,
        startup_timeout: float = 60.0,
    ):
        self.python = Path(python) if python is not None else find_phyre_python()
        if not self.python.exists():
            raise _unavailable(f"{self.python} does not exist")
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen | None = None
        self._stderr = None
        self._poller: select.poll | None = None
        self._last_status: int | None = None  # exit status of the last discarded process
        self.frame_codecs: tuple[str, ...] = ()  # encodings the sidecar can send frames in

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> PhyreSidecar:
        """Start the sidecar (if not running) and wait until it answers a ping."""
        if self._proc is None:
            self._start("startup")
        return self

    def _start(self, what: str) -> None:
        self._last_status = None
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(
                [str(self.python), str(SIDECAR_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=self._stderr,
                bufsize=0,
                env=_sidecar_env(),
            )
        except OSError as exc:
            self._stderr.close()
            raise _unavailable(f"cannot run {self.python}: {exc.strerror}") from exc
        self._poller = select.poll()
        self._poller.register(self._proc.stdout, select.POLLIN)
        try:
            header, _ = self._exchange({"op": "ping"}, what, self.startup_timeout)
            self.frame_codecs = tuple(header.get("frame_codecs", ()))
        except PhyreError:
            if self._last_status == EXIT_NO_PHYRE:
                raise _unavailable(f"{self.python} cannot import phyre") from None
            raise

    def close(self) -> None:
        """Stop the sidecar: closing its stdin makes it exit."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._stderr.close()

    def __enter__(self) -> PhyreSidecar:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.close()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    # -- requests -----------------------------------------------------------------------------

    def ping(self) -> dict:
        """{"ok": True, "python": ..., "phyre": ..., "palette": PHYRE's colour table}."""
        header, _ = self._request({"op": "ping"}, "ping")
        return header

    def describe_templates(self) -> dict[int, tuple[str, ...]]:
        """The 70 templates' object sets, {template_id: (4 object type names)}."""
        header, _ = self._request({"op": "describe_templates"}, "describe_templates")
        return {int(t): tuple(objects) for t, objects in header["templates"].items()}

    def simulate(
        self,
        template_id: int,
        seed: int,
        trial: int,
        *,
        frames: int = FRAMES,
        stride: int = STRIDE,
        rgb: bool = False,
    ) -> dict[str, Any]:
        """Simulate one video of template `template_id`, task seed `seed`, red ball `trial`.

        Returns a dict:
            frames        uint8 (T, 256, 256)      PHYRE colour indices, row 0 = top
                                                   (decode with index_to_rgb)
            objects       float32 (T, N, 15)       per frame and object: x, y (fractions of
                                                   the scene, y up), angle / 2 pi, diameter,
                                                   shape one-hot (ball, bar, jar, sticks),
                                                   colour one-hot (red, green, blue, purple,
                                                   gray, black), dynamic flag
            object_types  tuple of N str           the 8 type names, "red_ball" last
            action        float64 (3,)             PHYRE ball-tier action (x, y, r) in [0, 1]
            red_ball_px   float64 (3,)             the red ball's x, y, radius in pixels (y up)
            placement     str                      "heuristic" or "fallback"
            attempts      int                      placements tried (invalid ones resampled)
            frames_simulated int                   real frames (< T only if padded)
            template_id, seed, trial  int
            rgb           uint8 (T, 256, 256, 3)   only with rgb=True: PHYRE's own
                                                   observations_to_uint8_rgb
        """
        request = {
            "op": "simulate",
            "template_id": template_id,
            "seed": seed,
            "trial": trial,
            "frames": frames,
            "stride": stride,
            "rgb": rgb,
        }
        what = f"template {template_id} seed {seed} trial {trial}"
        return self._items(*self._request(request, what))[0]

    def simulate_batch(
        self,
        items: Sequence[tuple[int, int, int]],
        *,
        frames: int = FRAMES,
        stride: int = STRIDE,
        frames_codec: str | None = None,
    ) -> list[dict[str, Any]]:
        """Simulate several (template_id, seed, trial) in one request; dicts as in simulate.

        With `frames_codec` (one of `frame_codecs`, after `start`), each item's "frames" is that
        encoding's bytes as a uint8 array (nbytes,), made in the sidecar's process.
        """
        if not items:
            return []
        request = {
            "op": "simulate_batch",
            "items": [{"template_id": t, "seed": s, "trial": r} for t, s, r in items],
            "frames": frames,
            "stride": stride,
        }
        if frames_codec is not None:
            request["frames_codec"] = frames_codec
        t, s, r = items[0]
        what = f"batch of {len(items)} (first: template {t} seed {s} trial {r})"
        return self._items(*self._request(request, what))

    def check_action(self, template_id: int, seed: int, action: Sequence[float]) -> bool:
        """PHYRE's verdict on a red-ball action: inside the scene and overlapping nothing."""
        request = {
            "op": "check_action",
            "template_id": template_id,
            "seed": seed,
            "action": [float(a) for a in action],
        }
        header, _ = self._request(request, f"template {template_id} seed {seed} check_action")
        return bool(header["valid"])

    # -- plumbing -----------------------------------------------------------------------------

    @staticmethod
    def _items(header: dict, arrays: list[np.ndarray]) -> list[dict[str, Any]]:
        items = []
        for meta in header["items"]:
            item = dict(meta)
            item["action"] = np.asarray(meta["action"], dtype=np.float64)
            item["red_ball_px"] = np.asarray(meta["red_ball_px"], dtype=np.float64)
            item["object_types"] = tuple(meta["object_types"])
            items.append(item)
        for desc, array in zip(header.get("payloads", []), arrays, strict=True):
            items[desc["item"]][desc["key"]] = array
        return items

    def _request(self, request: dict, what: str) -> tuple[dict, list[np.ndarray]]:
        if self._proc is None:
            self._start(f"startup for {what}")
        elif self._proc.poll() is not None:
            # It died between requests (killed, out of memory): report it once, restart later.
            detail = self._discard_process(wait=0)
            raise PhyreError(
                f"PHYRE sidecar exited (status {self._last_status}) before {what}{detail}"
            )
        return self._exchange(request, what, self.timeout)

    def _exchange(self, request: dict, what: str, timeout: float):
        """Send one request and read its reply; a dead or stuck sidecar is discarded."""
        deadline = time.monotonic() + timeout
        try:
            self._write_message(request)
            size = LENGTH.unpack(self._read(LENGTH.size, deadline))[0]
            header = json.loads(self._read(size, deadline))
            arrays = [self._read_array(desc, deadline) for desc in header.get("payloads", [])]
        except TimeoutError:
            self._discard_process(wait=0)
            raise PhyreError(f"PHYRE sidecar timed out after {timeout:g} s on {what}") from None
        except (OSError, EOFError, ValueError) as exc:
            # Give a dying sidecar a moment to exit so that its status and stderr are final.
            detail = self._discard_process(wait=5)
            raise PhyreError(
                f"PHYRE sidecar crashed (status {self._last_status}) on {what}: "
                f"{type(exc).__name__}{detail}"
            ) from None
        if "error" in header:
            if "item" in header:  # name the failing item of a batch
                what = "template {template_id} seed {seed} trial {trial}".format(**header["item"])
            raise PhyreError(f"PHYRE sidecar failed on {what}: {header['error']}")
        return header, arrays

    def _write_message(self, request: dict) -> None:
        body = json.dumps(request).encode()
        view = memoryview(LENGTH.pack(len(body)) + body)
        while view:  # a raw pipe write may be partial
            view = view[self._proc.stdin.write(view) :]

    def _read(self, size: int, deadline: float) -> bytearray:
        buffer = bytearray(size)
        self._read_into(memoryview(buffer), deadline)
        return buffer

    def _read_array(self, desc: dict, deadline: float) -> np.ndarray:
        # Read straight into the array's memory: no intermediate copy of 2 MB of frames.
        array = np.empty(desc["shape"], dtype=np.dtype(desc["dtype"]))
        self._read_into(memoryview(array).cast("B"), deadline)
        return array

    def _read_into(self, view: memoryview, deadline: float) -> None:
        got = 0
        while got < len(view):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(remaining * 1000):
                raise TimeoutError
            n = self._proc.stdout.readinto(view[got:])
            if not n:
                raise EOFError("sidecar closed its stdout")
            got += n

    def _discard_process(self, wait: float) -> str:
        """Stop and forget the process (after `wait` s, then kill); returns ': <stderr tail>'."""
        proc, self._proc = self._proc, None
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._last_status = proc.returncode
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()
            except OSError:  # closing a broken stdin pipe may fail to flush
                pass
        self._stderr.seek(max(0, self._stderr.seek(0, os.SEEK_END) - STDERR_TAIL_BYTES))
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        self._stderr.close()
        return f": {' | '.join(lines[-3:])}" if lines else ""
