"""Benchmark of `decompose_video`: wall time, frames/s and peak RSS per input, with and without transcoding.

Every measurement runs in its own subprocess, so its peak RSS is clean (it includes the Python,
torch and PyAV imports, which are reported separately). Inputs:

- the two demo clips of the original (golden/preprocess, already 6 fps MPEG-4): `transcode=False`
  and `transcode=True`;
- H.264 stand-ins of their sources (same size and length, 30 fps), which is what the original's
  published figures (1.1 s and 2.1 s) were measured on;
- a synthetic 13.5 s 720p H.264 clip (original: 3.4-9.6 s, 2.4 GB);
- a long synthetic 720p H.264 video, 10 minutes by default (`--long-minutes 60` for an hour): memory
  must stay bounded. It is one minute of `write_synthetic_video` repeated by stream copy, since
  rendering an hour of 720p frames takes longer than decomposing them; peak memory only depends on
  the length and frame size.

`--baseline-src DIR` measures a second version of the package (e.g. `git archive main src | tar -x -C
/tmp/base`) on the same inputs in the same run, one subprocess per measurement, and prints the
ratios (baseline / this).

Usage: `python benchmarks/bench_decompose.py [--golden-dir DIR] [--repeat 3] [--skip-long]
[--long-minutes 60] [--long-only] [--baseline-src DIR]`
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from transformers_vlavit.machine import describe_machine

PROJECT_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN = PROJECT_ROOT.parent / "shared" / "golden" / "preprocess"

# The original pipeline (ffmpeg CLI + mvextractor + its post-processing) on this kind of machine,
# measured on the H.264 sources: seconds (a range where it varied) and peak RSS in MB where known.
ORIGINAL_SECONDS = {
    "h264_320x240_14s": (1.1, 1.1),
    "h264_596x336_13s": (2.1, 2.1),
    "h264_720p_13.5s": (3.4, 9.6),
}
ORIGINAL_PEAK_RSS_MB = {"h264_720p_13.5s": 2400}

# decompose_video settings compared for each transcoded input: the default first.
VARIANTS = {
    "default": {},
    "no overlap": {"overlap": False},
    "2 encoder threads (other bitstream)": {"encoder_threads": 2},
}


def machine_description() -> str:
    """CPU model, core counts and GPUs (`transformers_vlavit.machine`), load and library versions."""
    import av

    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    return (
        f"{describe_machine()}; load average {load}; Python {platform.python_version()}, PyAV {av.__version__}, "
        f"libavcodec {'.'.join(map(str, av.library_versions['libavcodec']))}"
    )


def _cpu_seconds() -> float:
    """User + system CPU time of this process, all threads."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB.

    Linux's `ru_maxrss` survives fork and exec, so a child started by a large parent would report the
    parent's peak; `VmHWM` belongs to the process's own address space and starts afresh at exec.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(path: str, transcode: bool, settings: dict, repeat: int) -> dict:
    """Run inside the subprocess: import, then time `repeat` decompositions; peak RSS at the end."""
    started = time.perf_counter()
    from transformers_vlavit.video_decomposition import decompose_video

    imported = time.perf_counter()
    rss_after_import = peak_rss_mb()
    runs, cpu = [], []
    for _ in range(repeat):
        begin, begin_cpu = time.perf_counter(), _cpu_seconds()
        result = decompose_video(path, transcode=transcode, **settings)
        runs.append(time.perf_counter() - begin)
        cpu.append(_cpu_seconds() - begin_cpu)
    return {
        "import_s": imported - started,
        "runs_s": runs,
        "cpu_s": cpu,
        "frames": result.num_frames,
        "clips": result.num_clips,
        "rss_after_import_mb": rss_after_import,
        "peak_rss_mb": peak_rss_mb(),
    }


def run_measurement(
    path: Path, transcode: bool, settings: dict, repeat: int, source_dir: Path | None = None
) -> dict:
    """Measure in a fresh Python process (importing the package from ``source_dir`` when given)."""
    command = [
        sys.executable,
        __file__,
        "--measure",
        str(path),
        "--transcode",
        str(int(transcode)),
        "--settings",
        json.dumps(settings),
        "--repeat",
        str(repeat),
    ]
    environment = dict(os.environ)
    if source_dir is not None:
        environment["PYTHONPATH"] = os.pathsep.join(
            [str(source_dir), *filter(None, [environment.get("PYTHONPATH")])]
        )
    completed = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def source_info(path: Path) -> tuple[float, int, str]:
    """Duration (s), number of source frames and a short description of the input."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.demux(stream) if _.size)
        duration = (
            float(container.duration / 1e6) if container.duration else frames / float(stream.guessed_rate)
        )
        return (
            duration,
            frames,
            f"{stream.codec_context.name} {stream.codec_context.width}x{stream.codec_context.height}",
        )


def repeat_video(piece: Path, destination: Path, copies: int) -> None:
    """Write ``copies`` back-to-back copies of ``piece``'s video stream to ``destination`` (stream copy).

    Timestamps of copy ``k`` are shifted by ``k`` times the piece's length, so the result plays as one
    video. The piece must have no B-frames (presentation order = decoding order), as x264's
    ``ultrafast`` preset gives.
    """
    import av

    with av.open(str(piece)) as source:
        stream = source.streams.video[0]
        packets = [packet for packet in source.demux(stream) if packet.size]
        if any(packet.pts != packet.dts for packet in packets):
            raise ValueError(f"{piece}: has reordered frames (B-frames); cannot be repeated by stream copy")
        span = max(packet.pts + packet.duration for packet in packets) - min(packet.pts for packet in packets)
        with av.open(str(destination), "w") as target:
            copy = target.add_stream_from_template(stream)
            for index in range(copies):
                for packet in packets:
                    shifted = av.Packet(bytes(packet))
                    shifted.pts = shifted.dts = packet.pts + index * span
                    shifted.duration = packet.duration
                    shifted.is_keyframe = packet.is_keyframe
                    shifted.time_base = stream.time_base
                    shifted.stream = copy
                    target.mux(shifted)


def prepare_inputs(
    golden: Path, workdir: Path, skip_long: bool, long_fps: float, long_minutes: int, long_only: bool
) -> list[tuple[str, Path, list[bool]]]:
    """(name, path, transcode modes) of every input, generating the synthetic ones."""
    from transformers_vlavit.synthetic_video import write_synthetic_video

    inputs = []
    synthetic = []
    if not long_only:
        for name in ("demo_video7013", "demo_31200691"):
            if (golden / f"{name}.m4v").is_file():
                inputs.append((name, golden / f"{name}.m4v", [False, True]))
            else:
                print(f"(skipping {name}: {golden} not found)", file=sys.stderr)
        synthetic = [
            ("h264_320x240_14s (demo_video7013 stand-in)", dict(width=320, height=240, duration=14.0, fps=30.0)),
            ("h264_596x336_13s (demo_31200691 stand-in)", dict(width=596, height=336, duration=13.0, fps=30.0)),
            ("h264_720p_13.5s", dict(width=1280, height=720, duration=13.5, fps=30.0)),
        ]
    for name, settings in synthetic:
        path = workdir / (name.split(" ")[0] + ".mp4")
        if not path.is_file():
            begin = time.perf_counter()
            write_synthetic_video(path, **settings)
            print(f"(generated {path.name} in {time.perf_counter() - begin:.1f} s)", file=sys.stderr)
        inputs.append((name, path, [True]))
    if not skip_long:
        name = f"h264_720p_{long_minutes}min"
        path = workdir / f"{name}_{long_fps:g}fps.mp4"
        if not path.is_file():
            begin = time.perf_counter()
            piece = workdir / f"h264_720p_1min_{long_fps:g}fps.mp4"
            if not piece.is_file():
                write_synthetic_video(
                    piece,
                    width=1280,
                    height=720,
                    duration=60.0,
                    fps=long_fps,
                    codec_options={"preset": "ultrafast"},
                )
            repeat_video(piece, path, long_minutes)
            print(f"(generated {path.name} in {time.perf_counter() - begin:.1f} s)", file=sys.stderr)
        inputs.append((name, path, [True]))
    return inputs


def compared_with_original(name: str, seconds: float) -> tuple[str, str]:
    """The original's time for this input and how many times faster this run is (empty if unknown)."""
    low, high = ORIGINAL_SECONDS.get(name.split(" ")[0], (None, None))
    if low is None:
        return "", ""
    if low == high:
        return f"{low:g}", f"{low / seconds:.1f}x"
    return f"{low:g}-{high:g}", f"{low / seconds:.1f}-{high / seconds:.1f}x"


def ratio_line(results: dict[str, dict]) -> str:
    """Baseline / this for wall time and peak RSS (above 1: this version is faster / smaller)."""
    base, this = results["baseline"], results["this"]
    wall = statistics.median(base["runs_s"]) / statistics.median(this["runs_s"])
    rss = base["peak_rss_mb"] / this["peak_rss_mb"]
    growth_base = base["peak_rss_mb"] - base["rss_after_import_mb"]
    growth_this = this["peak_rss_mb"] - this["rss_after_import_mb"]
    same = "same frames and clips" if (base["frames"], base["clips"]) == (this["frames"], this["clips"]) else (
        "DIFFERENT frames or clips"
    )
    return (
        f"wall {wall:.2f}x, peak RSS {rss:.2f}x (growth after import {growth_base:.0f} MB -> "
        f"{growth_this:.0f} MB), {same}"
    )


def main() -> None:
    """Parse the command line, then run one measurement (`--measure`, in a child process) or all of them."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--golden-dir", type=Path, default=DEFAULT_GOLDEN)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where synthetic inputs go (default: temp)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per measurement (median reported)")
    parser.add_argument("--skip-long", action="store_true", help="leave out the long 720p input")
    parser.add_argument("--long-only", action="store_true", help="measure only the long 720p input")
    parser.add_argument("--long-minutes", type=int, default=10, help="length of the long input in minutes")
    parser.add_argument("--long-fps", type=float, default=24.0, help="frame rate of the long input")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        default=None,
        help="also measure the package found in this source folder (a previous version), same inputs",
    )
    parser.add_argument("--variants", action="store_true", help="also time non-default threading settings")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--transcode", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        print(json.dumps(measure(args.measure, bool(args.transcode), json.loads(args.settings), args.repeat)))
        return

    print(f"machine: {machine_description()}")
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        inputs = prepare_inputs(
            args.golden_dir, workdir, args.skip_long, args.long_fps, args.long_minutes, args.long_only
        )
        versions = {"this": None} if args.baseline_src is None else {"baseline": args.baseline_src, "this": None}
        header = (
            f"{'input':46} {'source':22} {'mode':44} {'version':8} {'wall s':>7} {'CPU s':>6} "
            f"{'MPEG-4 fr/s':>11} {'src fr/s':>9} {'peak RSS MB':>11} {'(after import)':>14} "
            f"{'original s':>11} {'speed-up':>9}"
        )
        print(header)
        print("-" * len(header))
        for name, path, modes in inputs:
            duration, source_frames, description = source_info(path)
            for transcode in modes:
                variants = VARIANTS if transcode and args.variants else {"default": {}}
                for label, settings in variants.items():
                    repeat = 1 if "min" in name else args.repeat
                    mode = f"transcode={transcode}, {label}"
                    results = {}
                    for version, source_dir in versions.items():
                        result = run_measurement(path, transcode, settings, repeat, source_dir)
                        results[version] = result
                        wall = statistics.median(result["runs_s"])
                        known, gain = compared_with_original(name, wall) if transcode else ("", "")
                        cpu = statistics.median(result["cpu_s"])
                        print(
                            f"{name:46} {description:22} {mode:44} {version:8} {wall:7.2f} {cpu:6.2f} "
                            f"{result['frames'] / wall:11.0f} {source_frames / wall:9.0f} "
                            f"{result['peak_rss_mb']:11.0f} {result['rss_after_import_mb']:14.0f} "
                            f"{known:>11} {gain:>9}",
                            flush=True,
                        )
                    if len(results) == 2:
                        print(f"{'':46} {'':22} {mode:44} {'ratio':8} " + ratio_line(results), flush=True)
    for name, megabytes in ORIGINAL_PEAK_RSS_MB.items():
        print(f"original pipeline peak RSS on {name}: {megabytes} MB")
    print(f"load average at the end: {', '.join(f'{value:.2f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
