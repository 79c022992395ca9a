"""Display-name masking: only masked names are ever stored, shown or logged."""

from __future__ import annotations

import unicodedata


def _is_cjk(ch: str) -> bool:
    return unicodedata.east_asian_width(ch) in {"W", "F"}


def _mask_word(word: str) -> str:
    if len(word) <= 1:
        return "*"  # a one-letter word shown as is would leave names like "张 三" unmasked
    return word[0] + "*" * (len(word) - 1)


def mask_name(full_name: str) -> str:
    """张三 → 张*, 张小三 → 张*三, 欧阳小明 → 欧**明, John Smith → J*** S****."""
    name = " ".join(full_name.split())
    if not name:
        return "*"
    if any(_is_cjk(ch) for ch in name) and " " not in name:
        if len(name) == 1:
            return "*"
        if len(name) == 2:
            return name[0] + "*"
        return name[0] + "*" * (len(name) - 2) + name[-1]
    return " ".join(_mask_word(word) for word in name.split(" "))
