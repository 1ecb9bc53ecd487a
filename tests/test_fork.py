"""Fork safety (issue 16): after any use in the parent, a child made by os.fork() or a multiprocessing fork
pool can load, encode, batch-encode and train, with the parent's results and no hang.

Each scenario runs in a fresh interpreter (so no earlier test has already started thread pools): it makes
its first use, then forks one child per operation; each child has an alarm, so a deadlock fails the test
with a timeout instead of hanging it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import CORPORA

FIRST_USES = {
    "load": "tok = bpe_fast.Tokenizer.gpt2()",
    "encode": "tok = bpe_fast.Tokenizer.gpt2(); tok.encode_ordinary(TEXT)",
    "batch_default_threads": "tok = bpe_fast.Tokenizer.gpt2(); tok.encode_ordinary_batch(DOCS)",
    "batch_8_threads": "tok = bpe_fast.Tokenizer.gpt2(); tok.encode_ordinary_batch(DOCS, num_threads=8)",
    "flat_batch": "tok = bpe_fast.Tokenizer.gpt2(); tok.encode_batch_flat(DOCS)",
    "train_default_threads": "bpe_fast.train(DOCS, 300)",
    "train_1_thread": "bpe_fast.train(DOCS, 300, num_threads=1)",
}

# What each child does; every result is compared with the parent doing the same after the child.
OPERATIONS = {
    "load": "len(bpe_fast.Tokenizer.gpt2().merges)",
    "encode": "bpe_fast.Tokenizer.gpt2().encode_ordinary(TEXT)",
    "batch": "bpe_fast.Tokenizer.gpt2().encode_ordinary_batch(DOCS)",
    "batch_4_threads": "bpe_fast.Tokenizer.gpt2().encode_ordinary_batch(DOCS, num_threads=4)",
    "flat_batch": "bpe_fast.Tokenizer.gpt2().encode_batch_flat(DOCS)[0].tolist()",
    "train": "bpe_fast.train(DOCS, 300).merges",
    "train_2_threads": "bpe_fast.train(DOCS, 300, num_threads=2).merges",
}

SCENARIO = textwrap.dedent(
    """
    import json, os, signal, sys
    import bpe_fast
    TEXT = open({corpus!r}, encoding="utf-8").read()[:20000]
    DOCS = [TEXT[i:i + 700] for i in range(0, len(TEXT), 700)]
    {first_use}
    OPERATIONS = {operations!r}
    report = {{}}
    for name, expression in OPERATIONS.items():
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # a deadlock ends the child instead of hanging the test
            os.close(read_end)
            value = eval(expression)
            os.write(write_end, json.dumps(value).encode())
            os._exit(0)
        os.close(write_end)
        chunks = []
        while True:
            chunk = os.read(read_end, 1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        child = json.loads(b"".join(chunks)) if chunks else None
        parent = json.loads(json.dumps(eval(expression)))
        report[name] = {{"status": status, "same": child == parent}}
    print(json.dumps(report))
    """
)


@pytest.mark.parametrize("first_use", sorted(FIRST_USES))
def test_forked_children_work_after_any_first_use(first_use):
    script = SCENARIO.format(
        corpus=str(CORPORA / "tinyshakespeare.txt"),
        first_use=FIRST_USES[first_use],
        operations=OPERATIONS,
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(report) == sorted(OPERATIONS)
    for name, outcome in report.items():
        assert outcome["status"] == 0, (
            f"{first_use} then {name}: child status {outcome['status']} (14 = hung)"
        )
        assert outcome["same"], f"{first_use} then {name}: the child's result differs from the parent's"


POOL_SCRIPT = textwrap.dedent(
    """
    import json, multiprocessing
    import bpe_fast
    TEXT = open({corpus!r}, encoding="utf-8").read()[:40000]
    DOCS = [TEXT[i:i + 500] for i in range(0, len(TEXT), 500)]
    tok = bpe_fast.Tokenizer.gpt2()
    expected = tok.encode_ordinary_batch(DOCS, num_threads=8)

    def work(part):
        return tok.encode_ordinary_batch(part)

    if __name__ == "__main__":
        parts = [DOCS[i::4] for i in range(4)]
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map_async(work, parts).get(timeout=60)
        want = [tok.encode_ordinary_batch(part) for part in parts]
        print(json.dumps(got == want))
    """
)


def test_a_multiprocessing_fork_pool_encodes_after_the_parent_used_8_threads(tmp_path):
    script = tmp_path / "pool_after_threads.py"
    script.write_text(POOL_SCRIPT.format(corpus=str(CORPORA / "tinyshakespeare.txt")), encoding="utf-8")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "true"
