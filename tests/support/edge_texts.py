"""Texts whose whitespace, Unicode and scripts tell tokenizer pipelines apart."""

from __future__ import annotations

EDGE_TEXTS = [
    "query: how much protein should a female eat",
    "trailing space ",
    "trailing spaces   ",
    "trailing tab\t",
    "trailing newline\n",
    "trailing no-break space\u00a0",
    "trailing zero-width space\u200b",
    "  leading and trailing spaces  ",
    "\tleading tab",
    "\nleading newline",
    "inner  double   spaces",
    "inner\ttab and\nnewline and\r\nCRLF",
    "no\u00a0break and zero\u200bwidth and ideographic\u3000space",
    "thin\u2009space and narrow\u202fno-break",
    "combining e\u0301 vs precomposed é; Ångström, naïve CAFÉ",
    "ﬁ ligature, ＦＵＬＬＷＩＤＴＨ, ① circled",
    "東京は日本の首都です。",
    "日本語 and English, mixed",
    "emoji 🙂🚀 and a family 👩‍👩‍👧",
    "Привет, мир! Как дела?",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "a <mask> between words",
    "MiXeD CaSe WoRdS",
    " ",
    "\t\n",
    "",
]

# (query, document): queries ending in whitespace change every document's pair in XLM-R files.
EDGE_QUERIES = [
    "how much protein should a female eat",
    "how much protein should a female eat ",
    "how much protein\t",
    "  protein\u00a0",
]
