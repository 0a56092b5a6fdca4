"""The sha256 memo beside the compiled graphs (models/cache.py `file_hash`) stays bounded."""

from __future__ import annotations

import hashlib
import json
import os

from embedserve.models import cache


def _memo() -> dict[str, str]:
    return json.loads((cache.compiled_root() / "hashes.json").read_text())


def _file(path, text: str):
    path.write_text(text)
    return path


def test_memo_forgets_deleted_and_rewritten_files_and_keeps_the_newest(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDSERVE_CACHE", str(tmp_path / "cache"))
    gone = _file(tmp_path / "gone.bin", "a temporary checkpoint")
    assert cache.file_hash(gone) == hashlib.sha256(b"a temporary checkpoint").hexdigest()
    gone.unlink()
    kept = _file(tmp_path / "kept.bin", "first")
    cache.file_hash(kept)
    assert [k.rsplit(":", 2)[0] for k in _memo()] == [str(kept)]
    # Rewritten: the old entry goes with the new hash's write, the new hash is the new content's.
    _file(kept, "second, longer")
    os.utime(kept, ns=(1, 1))
    assert cache.file_hash(kept) == hashlib.sha256(b"second, longer").hexdigest()
    assert list(_memo().values()) == [hashlib.sha256(b"second, longer").hexdigest()]
    # At most MEMO_ENTRIES entries, the newest kept.
    monkeypatch.setattr(cache, "MEMO_ENTRIES", 3)
    files = [_file(tmp_path / f"f{i}.bin", f"file {i}") for i in range(5)]
    for path in files:
        cache.file_hash(path)
    assert [k.rsplit(":", 2)[0] for k in _memo()] == [str(p) for p in files[2:]]
    # A remembered file is answered from the memo (same hash, memo unchanged).
    before = _memo()
    assert cache.file_hash(files[4]) == hashlib.sha256(b"file 4").hexdigest()
    assert _memo() == before
