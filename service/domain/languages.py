"""Which language a text is in, as far as the script tells: enough to centre embeddings per language.

Multilingual encoders keep each language in its own region of the space (Libovický et al., 2020,
"On the language neutrality of pre-trained multilingual representations"): an English query lies nearer
any English text than a Chinese synopsis of the very story it describes. Centring each language on its
own mean removes most of that. The catalogue's languages (Chinese, Japanese, English, some Korean) are
told apart by script alone, so no language-identification model is needed.
"""

from __future__ import annotations

ENGLISH = "en"
JAPANESE = "ja"
CHINESE = "zh"
KOREAN = "ko"
UNDETERMINED = "und"


def _is_kana(ch: str) -> bool:
    return "\u3040" <= ch <= "\u30ff" or "\u31f0" <= ch <= "\u31ff" or "\uff66" <= ch <= "\uff9f"


def _is_han(ch: str) -> bool:
    return "\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" or "\U00020000" <= ch <= "\U0002ffff"


def _is_hangul(ch: str) -> bool:
    return "\uac00" <= ch <= "\ud7af" or "\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f"


def detect_language(text: str) -> str:
    """`ja`, `zh`, `ko`, `en` (any Latin-script text) or `und` (no letters: emoji, digits, punctuation).

    Chinese text quotes Japanese names in kana now and then, so Japanese needs kana to be a fair share of
    the CJK characters, not merely present. Latin script counts as English: romanised titles and the odd
    French overview are rarer than English by far in this catalogue and its queries.
    """
    kana = han = hangul = latin = 0
    for ch in text:
        if _is_kana(ch):
            kana += 1
        elif _is_han(ch):
            han += 1
        elif _is_hangul(ch):
            hangul += 1
        elif ch.isalpha():
            latin += 1
    cjk = kana + han
    if hangul and hangul >= cjk and hangul >= latin:
        return KOREAN
    if cjk and cjk >= 0.2 * latin:
        return JAPANESE if kana >= 0.2 * cjk else CHINESE
    if latin:
        return ENGLISH
    return UNDETERMINED
