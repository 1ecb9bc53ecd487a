"""Moved to gpt.shards.manifest. These re-exports keep `from gpt.manifest import ...` in gpt/train.py
working until it imports from gpt.shards / gpt.data; delete this file then."""

from gpt.shards.manifest import ManifestError, check_manifest, load_manifest, tokenizer_sha256, verify_shards

__all__ = ["ManifestError", "check_manifest", "load_manifest", "tokenizer_sha256", "verify_shards"]
