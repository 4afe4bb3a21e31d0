"""``vlavit evaluate TASK --model DIR --out RUN ...``: run a benchmark and write its metrics and report.

Tasks: video QA (``msvd-qa``, ``msrvtt-qa``, ``activitynet-qa``, generic ``video-qa``), text-to-video
(``msrvtt-t2v``, ``ucf101-t2v``, generic ``t2v``), ``reconstruction``, and the shapes world (``shapes-qa``,
``shapes-t2v``, ``shapes-i2v``). ``RUN/predictions.jsonl`` is written item by item; rerunning the same
command skips finished items. The metrics go to ``RUN/metrics.json``, the report to ``RUN/report.md``.
Inputs are checked before any model is loaded; a bad one is reported in one line with exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys

from .ask import DTYPES

# tasks in the order the help lists them (kept in step with evaluation.tasks.TASKS by a test)
TASK_NAMES = (
    "msvd-qa",
    "msrvtt-qa",
    "activitynet-qa",
    "video-qa",
    "msrvtt-t2v",
    "ucf101-t2v",
    "t2v",
    "reconstruction",
    "shapes-qa",
    "shapes-t2v",
    "shapes-i2v",
)
EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``evaluate`` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="run a benchmark (video QA, text-to-video, reconstruction, shapes world)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--model", required=True, help="Video-LaVIT checkpoint folder")
    parser.add_argument("--out", required=True, help="run folder (predictions, metrics, report, pictures)")
    data = parser.add_argument_group("data")
    data.add_argument(
        "--annotations", help="annotation / prompt file (shapes tasks: the shapes world folder)"
    )
    data.add_argument(
        "--video-root", help="folder of the benchmark's videos (reconstruction: the input videos)"
    )
    data.add_argument("--answers", help="ActivityNet-QA answers (default: *_q.json -> *_a.json)")
    data.add_argument("--mapping", help="MSVD-QA youtube_mapping.txt (default: next to --annotations)")
    data.add_argument("--class-index", help="UCF-101 classInd.txt")
    data.add_argument(
        "--samples-per-class", type=int, default=100, help="UCF-101 videos per class (default 100)"
    )
    data.add_argument("--split", default="test", help="shapes world split (default test)")
    data.add_argument("--limit", type=int, help="evaluate only the first N items")
    data.add_argument("--skip-missing", action="store_true", help="leave out items whose video is missing")
    qa = parser.add_argument_group("video QA")
    qa.add_argument("--judge", help="judge: a local chat model folder or an OpenAI-compatible API URL")
    qa.add_argument("--judge-model", default="gpt-3.5-turbo", help="model name sent to an API judge")
    qa.add_argument(
        "--judge-api-key-env", default="OPENAI_API_KEY", help="environment variable with the API key"
    )
    qa.add_argument("--batch-size", type=int, default=8, help="questions per generate call (default 8)")
    qa.add_argument("--max-clips", type=int, help="clips per video (default: the processor's, else 16)")
    qa.add_argument("--max-new-tokens", type=int, default=512, help="longest answer (default 512)")
    qa.add_argument(
        "--min-new-tokens", type=int, default=8, help="shortest answer, as the original (default 8)"
    )
    gen = parser.add_argument_group("generation")
    gen.add_argument("--seed", type=int, default=0, help="item i uses seed + i (default 0)")
    gen.add_argument("--num-clips", type=int, default=1, help="clips (4 s) per generated video (default 1)")
    gen.add_argument("--height", type=int, help="video height (default: the detokenizer's)")
    gen.add_argument("--width", type=int, help="video width (default: the detokenizer's)")
    gen.add_argument("--steps", type=int, default=25, help="video denoising steps (default 25)")
    gen.add_argument("--keyframe-steps", type=int, default=50, help="keyframe denoising steps (default 50)")
    gen.add_argument("--clip", help="CLIP model folder for CLIPSIM (transformers CLIPModel)")
    gen.add_argument(
        "--i3d", help="I3D weights for FVD (pytorch-i3d rgb_imagenet.pt / i3d_pretrained_400.pt)"
    )
    gen.add_argument("--cache-dir", help="cache of real-video FVD statistics (default RUN/cache)")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="model dtype (default float32)")
    parser.add_argument("--num-examples", type=int, default=8, help="samples shown in the report (default 8)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the task; bad inputs end with one line on stderr and exit status 2."""
    from ..evaluation import EvaluationInputError, evaluate

    options = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "func", "task", "model", "out")
    }
    try:
        metrics = evaluate(args.task, args.model, args.out, **options)
    except EvaluationInputError as error:
        print(f"vlavit evaluate: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(metrics, indent=2))
    return 0
