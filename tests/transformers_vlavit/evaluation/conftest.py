"""Fixtures of the evaluation tests: a tiny checkpoint, short videos, benchmark files in their published
layouts, a tiny local judge, a fake OpenAI-compatible endpoint on 127.0.0.1, tiny random CLIP and I3D."""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from transformers_vlavit.synthetic_video import write_synthetic_video
from transformers_vlavit.tiny_checkpoint import write_tiny_checkpoint

# the fake judge's answer words, chained token by token by the tiny local judge
JUDGE_ANSWER = ["{'pred':", "'yes',", "'score':", "4}"]
GENERATION_PROMPT = "ASSISTANT:"


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("evaluation") / "tiny")


@pytest.fixture(scope="session")
def videos(tmp_path_factory) -> list[Path]:
    """Three short synthetic clips (different seeds)."""
    folder = tmp_path_factory.mktemp("videos")
    paths = []
    for seed in range(3):
        path = folder / f"clip{seed}.mp4"
        write_synthetic_video(path, width=64, height=48, duration=3.0, fps=12, seed=seed)
        paths.append(path)
    return paths


def write_msvd_qa(folder: Path, videos: list[Path]) -> Path:
    """MSVD-QA as published: test_qa.json (integer video ids), youtube_mapping.txt, YouTubeClips/*.avi names."""
    clips = folder / "YouTubeClips"
    clips.mkdir(parents=True)
    names = ["-4wsuPCjDBc_5_15", "zv2RIbUsnSw_335_341"]
    for name, video in zip(names, videos):
        (clips / f"{name}.avi").write_bytes(video.read_bytes())  # PyAV reads the container by content
    (folder / "youtube_mapping.txt").write_text(f"{names[0]} vid1\n{names[1]} vid2\n")
    rows = [
        {"answer": "man", "id": 10, "question": "who is singing?", "video_id": 1},
        {"answer": "dance", "id": 11, "question": "what is a woman doing?", "video_id": 2},
        {"answer": "red", "id": 12, "question": "what colour is the ball?", "video_id": 1},
    ]
    (folder / "test_qa.json").write_text(json.dumps(rows))
    return folder / "test_qa.json"


@pytest.fixture
def msvd_qa(tmp_path, videos) -> tuple[Path, Path]:
    """``(test_qa.json, YouTubeClips)`` of a three-question MSVD-QA."""
    return write_msvd_qa(tmp_path / "msvd", videos), tmp_path / "msvd" / "YouTubeClips"


class FakeJudgeServer:
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 that says yes when the predicted answer
    equals the correct answer (score 5) and no otherwise (score 1); it records every request."""

    def __init__(self):
        self.requests: list[dict] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append(
                    {"path": self.path, "body": body, "auth": self.headers.get("Authorization")}
                )
                user = body["messages"][1]["content"]
                answer = re.search(r"Correct Answer: (.*)\n", user).group(1)
                prediction = re.search(r"Predicted Answer: (.*)\n", user).group(1)
                verdict = (
                    "{'pred': 'yes', 'score': 5}" if answer == prediction else "{'pred': 'no', 'score': 1}"
                )
                payload = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": verdict}}]}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_endpoint():
    server = FakeJudgeServer()
    yield server
    server.close()


@pytest.fixture(scope="session")
def tiny_judge(tmp_path_factory) -> Path:
    """A tiny Llama chat model that always answers ``{'pred': 'yes', 'score': 4}``.

    Its layers are zero, so each next token depends only on the current one (the residual stream is the
    token's one-hot embedding); the LM head chains the generation prompt through the answer words to ``</s>``.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<unk>", "<s>", "</s>", GENERATION_PROMPT, *JUDGE_ANSWER]
    vocab = {word: index for index, word in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}" + GENERATION_PROMPT
    size = len(words)
    config = LlamaConfig(
        vocab_size=size,
        hidden_size=size,
        intermediate_size=4,
        num_hidden_layers=1,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    model = LlamaForCausalLM(config)
    with torch.no_grad():
        for parameter in model.model.layers.parameters():
            parameter.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(size))
        model.lm_head.weight.zero_()
        chain = [GENERATION_PROMPT, *JUDGE_ANSWER, "</s>"]
        for current, following in itertools.pairwise(chain):
            model.lm_head.weight[vocab[following], vocab[current]] = 10.0
    folder = tmp_path_factory.mktemp("judge") / "tiny-judge"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory, tiny_checkpoint) -> Path:
    """A tiny random ``CLIPModel`` with an image processor and the tiny checkpoint's tokenizer."""
    from transformers import AutoTokenizer, CLIPConfig, CLIPImageProcessor, CLIPModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_checkpoint)
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "max_position_embeddings": 77,
        },
        vision_config={
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=8,
    )
    folder = tmp_path_factory.mktemp("clip") / "tiny-clip"
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    return folder


TINY_I3D_STEM = (4, 4, 8)
TINY_I3D_BLOCKS = tuple(
    (name, (2, 2, 4, 2, 2, 2))
    for name in (
        "Mixed_3b",
        "Mixed_3c",
        "Mixed_4b",
        "Mixed_4c",
        "Mixed_4d",
        "Mixed_4e",
        "Mixed_4f",
        "Mixed_5b",
        "Mixed_5c",
    )
)


@pytest.fixture(scope="session")
def tiny_i3d(tmp_path_factory) -> Path:
    """A narrow random I3D (the released layer names, 2-16 channels) saved as a ``.pt`` state dict.

    Random convolutions shrink the signal layer by layer until every video gives the same logits; the batch
    norms' running statistics are therefore calibrated on random videos (as training would set them) and the
    logits scaled up, so that different videos give clearly different features.
    """
    from transformers_vlavit.evaluation.i3d import InceptionI3d

    torch.manual_seed(0)
    model = InceptionI3d(stem_channels=TINY_I3D_STEM, blocks=TINY_I3D_BLOCKS, num_classes=12)
    batch_norms = [module for module in model.modules() if isinstance(module, torch.nn.BatchNorm3d)]
    for batch_norm in batch_norms:
        batch_norm.momentum = None  # cumulative average over the calibration batch
    with torch.no_grad():
        model.train()(torch.rand(4, 3, 16, 224, 224) * 2 - 1)
        model.logits.conv3d.weight.mul_(20)
    for batch_norm in batch_norms:
        batch_norm.momentum = 0.01
    path = tmp_path_factory.mktemp("i3d") / "tiny_i3d.pt"
    torch.save(model.state_dict(), path)
    return path
