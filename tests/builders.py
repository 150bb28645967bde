"""Tiny random checkpoints built from configs (no downloads), shaped like the real ones.

The tiny XLM-RoBERTa mirrors BGE-m3's folder: config.json, a SentencePiece-style Unigram
tokenizer with XLM-R's special tokens, sentence-transformers files declaring CLS pooling and an
8192-token window, and `sparse_linear.pt`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tokenizers import SentencePieceUnigramTokenizer, processors

from service.catalogue.ingest import IngestReport, ingest
from service.domain.documents import AnimeDocument
from service.runtime import build_runtime

if TYPE_CHECKING:
    from service.settings import Settings

SPECIAL_TOKENS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")

_CORPUS = [
    "A boy pilots a giant robot to fight mysterious angels.",
    "Space bounty hunters drift through the solar system chasing their pasts.",
    "High school girls form a light music club and play in a band.",
    "A young alchemist searches for the philosopher's stone with his brother.",
    "Titans attack the last city of humanity behind three walls.",
    "A quiet slice of life story about friends, cafes and summer festivals.",
    "Detectives solve murders in a city of magic and steam.",
    "新世紀エヴァンゲリオン 使徒 ロボット 学園 恋愛 日常",
    "进击的巨人 钢之炼金术师 星际牛仔 轻音少女 科幻 战斗 校园",
    "mecha romance comedy drama fantasy horror mystery sports music idol isekai",
]


def build_xlmr_tokenizer(
    directory: Path, max_length: int = 8192, special_tokens: tuple[str, ...] = SPECIAL_TOKENS
):
    from transformers import XLMRobertaTokenizerFast

    unigram = SentencePieceUnigramTokenizer()
    unigram.train_from_iterator(
        _CORPUS * 20, vocab_size=300, special_tokens=list(special_tokens), unk_token="<unk>"
    )
    backend = unigram._tokenizer
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>",
        pair="<s> $A </s> </s> $B </s>",
        special_tokens=[("<s>", backend.token_to_id("<s>")), ("</s>", backend.token_to_id("</s>"))],
    )
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_object=backend,
        bos_token="<s>",
        eos_token="</s>",
        sep_token="</s>",
        cls_token="<s>",
        unk_token="<unk>",
        pad_token="<pad>",
        mask_token="<mask>",
        model_max_length=max_length,
    )
    tokenizer.save_pretrained(str(directory))
    return tokenizer


def build_tiny_xlmr(
    directory: Path,
    *,
    seed: int = 0,
    sparse_head: bool = True,
    sentence_transformers: bool = True,
    hidden_size: int = 32,
) -> Path:
    """A BGE-m3-shaped checkpoint folder with random weights; returns the folder."""
    from transformers import XLMRobertaConfig, XLMRobertaModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_xlmr_tokenizer(directory)
    assert tokenizer.pad_token_id == 1, "XLM-R convention: <pad> is id 1"
    torch.manual_seed(seed)
    config = XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=hidden_size * 2,
        max_position_embeddings=8194,
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        type_vocab_size=1,
    )
    XLMRobertaModel(config, add_pooling_layer=False).eval().save_pretrained(str(directory))
    if sparse_head:
        torch.save(torch.nn.Linear(hidden_size, 1).state_dict(), directory / "sparse_linear.pt")
    if sentence_transformers:
        (directory / "1_Pooling").mkdir(exist_ok=True)
        (directory / "1_Pooling" / "config.json").write_text(
            json.dumps({"word_embedding_dimension": hidden_size, "pooling_mode_cls_token": True})
        )
        (directory / "modules.json").write_text(
            json.dumps(
                [
                    {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                    {
                        "idx": 1,
                        "name": "1",
                        "path": "1_Pooling",
                        "type": "sentence_transformers.models.Pooling",
                    },
                    {
                        "idx": 2,
                        "name": "2",
                        "path": "2_Normalize",
                        "type": "sentence_transformers.models.Normalize",
                    },
                ]
            )
        )
        (directory / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 8192}))
    return directory


def build_tiny_clip(
    directory: Path, *, seed: int = 0, image_size: int = 64, projection_dim: int = 64
) -> Path:
    """A transformers CLIPModel with random weights, its image processor and an XLM-R-style tokenizer.

    JinaCLIP v2's text tower is XLM-R, so the tokenizer is the same kind; <pad> comes first so the
    config's eos id (4) differs from CLIP's legacy value 2 and pooling uses the real EOS position.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_xlmr_tokenizer(
        directory, max_length=77, special_tokens=("<pad>", "<s>", "<unk>", "<mask>", "</s>")
    )
    torch.manual_seed(seed)
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "image_size": image_size,
        "patch_size": 8,
    }
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    CLIPModel(config).eval().save_pretrained(str(directory))
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    ).save_pretrained(str(directory))
    return directory


def synthetic_cover(seed: int, size: tuple[int, int] = (240, 340)):
    """A distinct poster-like picture: a gradient in its own hue (golden-ratio spaced) and random shapes."""
    import colorsys
    import random

    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    width, height = size
    hue = (seed * 0.618033988749895) % 1.0

    def colour(shift: float, saturation: float, value: float) -> tuple[int, int, int]:
        r, g, b = colorsys.hsv_to_rgb((hue + shift) % 1.0, saturation, value)
        return int(r * 255), int(g * 255), int(b * 255)

    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    top, bottom = colour(0.0, 0.7, 0.95), colour(rng.uniform(0.2, 0.5), 0.8, 0.35)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line(
            [(0, y), (width, y)], fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True))
        )
    for _ in range(rng.randrange(5, 10)):
        fill = colour(rng.uniform(0.0, 1.0), rng.uniform(0.3, 1.0), rng.uniform(0.2, 1.0))
        x0, y0 = rng.randrange(width), rng.randrange(height)
        box = [x0, y0, x0 + rng.randrange(30, width // 2), y0 + rng.randrange(30, height // 2)]
        if rng.random() < 0.5:
            draw.rectangle(box, fill=fill)
        else:
            draw.ellipse(box, fill=fill)
    return image


def encode_image(image, fmt: str = "PNG", **options) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def near_duplicate(image):
    """A screenshot-like copy: 3% cropped off each side, resized to 60%, re-encoded as JPEG quality 70."""
    import io

    from PIL import Image

    width, height = image.size
    dx, dy = int(width * 0.03), int(height * 0.03)
    cropped = image.crop((dx, dy, width - dx, height - dy))
    small = cropped.resize((int(cropped.width * 0.6), int(cropped.height * 0.6)), Image.BILINEAR)
    return Image.open(io.BytesIO(encode_image(small, "JPEG", quality=70))).convert("RGB")


def build_clip_b32_shaped(directory: Path, *, seed: int = 0) -> Path:
    """CLIP ViT-B/32's architecture (224 px, 12+12 layers, 512-d) with random weights.

    Not for relevance: for latency, where only the amount of computation matters.
    """
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_xlmr_tokenizer(
        directory, max_length=77, special_tokens=("<pad>", "<s>", "<unk>", "<mask>", "</s>")
    )
    torch.manual_seed(seed)
    text = {
        "vocab_size": len(tokenizer),
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }
    CLIPModel(CLIPConfig(text_config=text, vision_config={}, projection_dim=512)).eval().save_pretrained(
        str(directory)
    )
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(
        str(directory)
    )
    return directory


# Stories in English with a Chinese summary of the same plot: the pairs fine-tuning learns from.
STORIES = [
    (
        "A boy pilots a giant robot to fight mysterious angels. His father built it to save a ruined world.",
        "少年驾驶巨大机器人与神秘的使徒战斗。这台机器人是他的父亲为了拯救毁灭的世界而建造的。",
    ),
    (
        "Space bounty hunters drift through the solar system. They chase their pasts from planet to planet.",
        "一群赏金猎人乘着飞船在太阳系中漂流，从一个星球到另一个星球，追寻着各自的过去。",
    ),
    (
        "High school girls form a light music club. They play in a band and drink tea after every practice.",
        "几个高中女生组成了轻音部，一起组乐队演出，每次练习后都会在活动室里喝茶吃点心。",
    ),
    (
        "A young alchemist searches for the ancient stone with his brother after a forbidden ritual failed.",
        "年轻的炼金术师在禁忌的仪式失败之后，和弟弟一起踏上旅途，寻找传说中的贤者之石。",
    ),
    (
        "Titans attack the last city of humanity. Three walls protect it until the day the outer wall falls.",
        "巨人袭击人类最后的城市，三道城墙一直守护着人们，直到外墙被打破的那一天为止。",
    ),
    (
        "Detectives solve murders in a city of magic. Steam powers everything and nobody is what they seem.",
        "侦探们在一座充满魔法的城市里破解一桩又一桩谋杀案，这里的一切都由蒸汽驱动。",
    ),
]


# One franchise per story (the harness groups seasons by title stem).
NAMES = [
    "Angel Pilots",
    "Bounty Drifters",
    "Tea Club Band",
    "Alchemy Brothers",
    "Wall Titans",
    "Steam Detectives",
]

JAPANESE_NAMES = ["天使の操縦者", "賞金漂流", "茶会バンド", "錬金兄弟", "壁の巨人", "蒸気探偵"]


def story_documents(copies: int = 4) -> list[AnimeDocument]:
    """Six stories, each told in English with a Chinese summary, in `copies` seasons (one franchise
    per story): small enough for the tiny models, shaped like the catalogue fine-tuning mines."""
    docs = []
    for i in range(copies):
        for j, (english, chinese) in enumerate(STORIES):
            anime = f"anime-{i}-{j}"
            docs.append(
                AnimeDocument(
                    anime_id=anime,
                    title=f"{NAMES[j]} Season {i + 1}" if i else NAMES[j],
                    title_japanese=JAPANESE_NAMES[j],
                    synopsis=english + f" Season {i}." * (i > 0),
                    synopses={"zh": chinese},
                    genres=["Action", "Drama"] if j % 2 else ["Comedy", "Music"],
                    themes=["Mecha"] if j % 3 == 0 else ["School"],
                    type="TV",
                )
            )
    return docs


def ingest_documents(settings: Settings, documents: Sequence[AnimeDocument], **options: Any) -> IngestReport:
    """Embed and store `documents` with the service's own ingest, as its CLI would, and close the store.

    Runs on an event loop of its own thread, so a fixture may call it wherever it is: under
    pytest-asyncio, or beside Playwright's sync API (which keeps a loop running in the test's thread).
    """

    async def fill() -> IngestReport:
        runtime = await build_runtime(settings)
        try:
            return await ingest(runtime, documents, progress=False, **options)
        finally:
            await runtime.close()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, fill()).result()
