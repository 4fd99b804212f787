"""Video files in and out of the benchmark: H.264 MP4 (the ffmpeg inside imageio-ffmpeg), PNG
frames, NumPy arrays, and resizing to a suite's side.

Every reader returns (T, H, W, 3) uint8 RGB. MP4s are written with one encoder thread and
bit-exact flags, so the same frames and settings give the same bytes on the same ffmpeg
(`FFMPEG` is pinned through imageio-ffmpeg's version in pyproject.toml).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

from phyray.artifacts import temp_path
from phyray.data.shards import area_downsample

MP4, NPY, NPZ, PNG = ".mp4", ".npy", ".npz", ".png"
# The encoder of the conditioning clips: high quality, and playable everywhere (4:2:0 chroma).
CLIP_CRF = 12
# How a submitted video at another side is brought to the suite's: exact area averaging when
# the side is an integer multiple (what phyray's own lower-resolution references are), else
# PIL's box filter when shrinking (area averaging with fractional pixel weights) and bicubic
# when enlarging.
RESIZE_FILTER = "area (integer factor) / PIL box (shrink) / PIL bicubic (enlarge)"


class MediaError(ValueError):
    """A file that cannot be read as a video (its path and the reason)."""


def _ffmpeg() -> str:
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version() -> str:
    """The imageio-ffmpeg release: it fixes the ffmpeg binary, hence the encoded bytes."""
    import imageio_ffmpeg

    return imageio_ffmpeg.__version__


def encode_mp4(frames: np.ndarray, path: Path, fps: float, bitrate: int | None = None, crf: int = CLIP_CRF) -> None:
    """Write (T, H, W, 3) uint8 frames as H.264 (yuv420p) to `path` (temporary name, then
    rename): at `bitrate` bits/s (single pass) if given, else at constant quality `crf`."""
    t, h, w, _ = frames.shape
    rate = ["-b:v", str(bitrate), "-maxrate", str(bitrate), "-bufsize", str(2 * bitrate)] if bitrate else ["-crf", str(crf)]
    tmp = temp_path(path)
    command = [
        _ffmpeg(), "-hide_banner", "-loglevel", "error", "-y",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0",
        "-c:v", "libx264", "-preset", "medium", *rate, "-pix_fmt", "yuv420p", "-threads", "1",
        "-fflags", "+bitexact", "-flags:v", "+bitexact", "-map_metadata", "-1", "-f", "mp4", str(tmp),
    ]
    try:
        done = subprocess.run(command, input=np.ascontiguousarray(frames).tobytes(), capture_output=True)
        if done.returncode:
            raise MediaError(f"{path}: ffmpeg could not encode ({done.stderr.decode().strip()[-300:]})")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def decode_mp4(path: Path) -> np.ndarray:
    """An MP4 (any codec ffmpeg reads) as (T, H, W, 3) uint8 RGB."""
    import imageio_ffmpeg

    try:
        reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
        meta = next(reader)
        w, h = meta["size"]
        frames = [np.frombuffer(buffer, np.uint8).reshape(h, w, 3) for buffer in reader]
    except (OSError, RuntimeError, StopIteration) as err:
        raise MediaError(f"{path}: not a readable video ({str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__})") from None
    if not frames:
        raise MediaError(f"{path}: no frames")
    return np.stack(frames)


def write_pngs(frames: np.ndarray, directory: Path) -> list[Path]:
    """Frame i as `directory/<i:03d>.png` (no metadata: same frames, same bytes)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(frames):
        path = directory / f"{i:03d}{PNG}"
        tmp = temp_path(path)
        try:
            Image.fromarray(frame).save(tmp, format="PNG", compress_level=6)
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        paths.append(path)
    return paths


def read_pngs(directory: Path) -> np.ndarray:
    """A directory of PNG frames, in file-name order (000.png, 001.png, ...)."""
    paths = sorted(directory.glob(f"*{PNG}"))
    if not paths:
        raise MediaError(f"{directory}: no PNG frames")
    frames = []
    for path in paths:
        try:
            with Image.open(path) as image:
                frames.append(np.asarray(image.convert("RGB")))
        except OSError as err:
            raise MediaError(f"{path}: not a readable PNG ({err})") from None
    if len({f.shape for f in frames}) != 1:
        raise MediaError(f"{directory}: frames of different sizes")
    return np.stack(frames)


def read_array(path: Path) -> np.ndarray:
    """A .npy array, or a .npz holding one array (or one named `frames`), as (T, H, W, 3)
    uint8; float arrays are taken as [0, 1]."""
    try:
        if path.suffix == NPZ:
            with np.load(path) as archive:
                names = archive.files
                if "frames" not in names and len(names) != 1:
                    raise MediaError(f"{path}: holds {names}; name the video's array `frames`")
                array = archive["frames" if "frames" in names else names[0]]
        else:
            array = np.load(path)
    except (OSError, ValueError) as err:
        raise MediaError(f"{path}: not a readable NumPy file ({err})") from None
    if array.ndim != 4 or array.shape[-1] != 3:
        raise MediaError(f"{path}: array of shape {array.shape}; expected (T, H, W, 3)")
    if np.issubdtype(array.dtype, np.floating):
        array = np.clip(np.round(array * 255.0), 0, 255)
    return array.astype(np.uint8)


def read_video(path: Path) -> np.ndarray:
    """One submitted video: an .mp4, a directory of PNGs, or a .npy/.npz array."""
    if path.is_dir():
        return read_pngs(path)
    if path.suffix == MP4:
        return decode_mp4(path)
    if path.suffix in (NPY, NPZ):
        return read_array(path)
    raise MediaError(f"{path}: unknown video format (use .mp4, a directory of .png, .npy or .npz)")


def resize_video(frames: np.ndarray, side: int) -> np.ndarray:
    """(T, H, W, 3) uint8 at (T, side, side, 3) by `RESIZE_FILTER`; a non-square frame is a
    MediaError (the suites are square)."""
    t, h, w, _ = frames.shape
    if h != w:
        raise MediaError(f"frames of {w}x{h}; the suite's are {side}x{side} (square)")
    if h == side:
        return frames
    if h > side and h % side == 0:
        return area_downsample(frames, side)
    resample = Image.Resampling.BOX if h > side else Image.Resampling.BICUBIC
    return np.stack([np.asarray(Image.fromarray(f).resize((side, side), resample)) for f in frames])
