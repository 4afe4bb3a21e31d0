"""Peak memory of the README's released-size tokenizer snippets on CPU.

Each snippet runs in its own subprocess and reports its own peak RSS (``VmHWM`` of ``/proc/self/status``,
Linux), which includes the ~0.4 GB of the Python/torch/transformers import, the float32 weights of the
randomly initialised released-size model and the activations of one input. ``saved for backward`` is the
size of the tensors autograd would keep if the snippet ran with gradients on (counted with
``torch.autograd.graph.saved_tensors_hooks`` around the same calls with ``torch.enable_grad()`` forced
inside; the discrete-id methods ``encode`` / ``tokenize`` turn it off, so the snippet itself keeps none).

    python benchmarks/bench_snippet_memory.py            # both snippets
    python benchmarks/bench_snippet_memory.py --only motion
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap

PEAK_RSS = textwrap.dedent(
    """
    def peak_rss_gb():
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024**2
    """
)

SAVED_BYTES = textwrap.dedent(
    """
    import torch
    saved = []
    def pack(tensor):
        saved.append(tensor.untyped_storage().nbytes())
        return tensor
    def saved_gb(function, *args, **kwargs):
        saved.clear()
        unwrapped = getattr(function, "__wrapped__", None)  # the method without its no_grad decorator
        call = (lambda: unwrapped(function.__self__, *args, **kwargs)) if unwrapped else (lambda: function(*args, **kwargs))
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            call()
        return sum(saved) / 1024**3
    """
)

# the README's snippets, verbatim but for the input file and the prints
SNIPPETS = {
    "motion": (
        "motion tokenizer (158 M): encode, then decode + decode_for_detokenizer without autograd, one 4 s clip",
        """
        import torch
        from transformers_vlavit import VideoLaVITMotionTokenizer, VideoLaVITMotionTokenizerConfig, decompose_video
        model = VideoLaVITMotionTokenizer(VideoLaVITMotionTokenizerConfig())            # released size, 158 M
        ids = model.encode(decompose_video(CLIP).motion_vectors)                 # [clips, 135], no autograd
        with torch.no_grad():                                                           # decoding keeps a graph otherwise
            motion = model.decode(ids)                                                  # [clips, 2, 24, 20, 36]
            unet_motion = model.decode_for_detokenizer(ids, 40, 72)                     # resized, / 10
        peak, inputs = peak_rss_gb(), len(ids)
        grad_gb = saved_gb(model.encode, decompose_video(CLIP).motion_vectors)
        """,
    ),
    "visual": (
        "visual tokenizer (EVA-CLIP ViT-g + merger): tokenize, encode_features without autograd, one 224 x 224 image",
        """
        import torch
        from transformers_vlavit import VideoLaVITVisualTokenizer, VideoLaVITVisualTokenizerConfig
        pixel_values = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        model = VideoLaVITVisualTokenizer(VideoLaVITVisualTokenizerConfig()).eval()    # released size
        ids = model.tokenize(pixel_values)                  # list of [n_i]: 0-based visual codes (arg-max keep)
        with torch.no_grad():                               # understanding at inference: no graph to keep
            features = model.encode_features(pixel_values)  # list of [n_i, 4096] for understanding
        codes = model.get_code_embeddings(ids[0])           # [n_0, 32]: input of the keyframe decoder
        peak, inputs = peak_rss_gb(), len(ids)
        grad_gb = saved_gb(model.tokenize, pixel_values)
        """,
    ),
}


def run_snippet(name: str, clip: str) -> dict:
    """Run one snippet in a fresh interpreter; returns its peak RSS and autograd's would-be saved size (GB)."""
    body = textwrap.dedent(SNIPPETS[name][1])
    script = "\n".join(
        [PEAK_RSS, SAVED_BYTES, f"CLIP = {clip!r}", body, "import json", "print(json.dumps({'peak_gb': peak, 'saved_gb': grad_gb, 'inputs': inputs}))"]
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=sorted(SNIPPETS), help="measure one snippet")
    args = parser.parse_args()
    from transformers_vlavit.synthetic_video import write_synthetic_video

    with tempfile.TemporaryDirectory() as folder:
        clip = f"{folder}/clip.mp4"
        write_synthetic_video(clip, width=320, height=240, duration=4.0, fps=30)
        for name in [args.only] if args.only else list(SNIPPETS):
            result = run_snippet(name, clip)
            print(
                f"{SNIPPETS[name][0]} ({result['inputs']} input): peak RSS {result['peak_gb']:.2f} GB; "
                f"with autograd on, encode/tokenize would also keep {result['saved_gb']:.2f} GB for backward",
                flush=True,
            )


if __name__ == "__main__":
    main()
