"""The shard stage: corpora -> llm.c token shards + manifest.json, and what training reads back.

The data flows through one module per step:

    sources.py   local .txt/.jsonl/.parquet files or a Hugging Face dataset -> records (text or skip reason)
    split.py     which documents are val: a hash of each document's text
    encoder.py   documents -> ids with <|endoftext|> before each (bpe_fast's encode_batch_flat)
    writer.py    ids -> {val,train}_NNNNNN.bin per split, progress.json after every shard
    format.py    the .bin file itself: header, atomic write, checked read
    manifest.py  manifest.json: tokenizer identity (path relative to it + sha256), shard sizes and hashes
    merge.py     the parts of a --worker run -> one folder
    job.py       prepare(): one run over an output folder (start, resume, refuse, finish)
    dataset.py   the training side: which shards a run uses, their checks, its tokenizer

`python -m gpt.prepare` is the command line; `gpt.data` holds the torch loader.
"""

from .format import (
    HEADER_BYTES,
    HEADER_INTS,
    MAGIC_U16,
    MAGIC_U32,
    VERSION_U16,
    VERSION_U32,
    ShardError,
    WrittenShard,
    file_sha256,
    read_header,
    read_shard,
    token_dtype,
    write_shard,
)
from .manifest import (
    MANIFEST_NAME,
    ManifestError,
    check_manifest,
    load_manifest,
    tokenizer_sha256,
    verify_shards,
    write_manifest,
)

__all__ = [
    "HEADER_BYTES",
    "HEADER_INTS",
    "MAGIC_U16",
    "MAGIC_U32",
    "MANIFEST_NAME",
    "VERSION_U16",
    "VERSION_U32",
    "ManifestError",
    "ShardError",
    "WrittenShard",
    "check_manifest",
    "file_sha256",
    "load_manifest",
    "read_header",
    "read_shard",
    "token_dtype",
    "tokenizer_sha256",
    "verify_shards",
    "write_manifest",
    "write_shard",
]
