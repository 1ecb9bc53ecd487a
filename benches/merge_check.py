"""Is a trainer's merge list a valid BPE training result, even where it breaks count ties its own way?

The reference rule (bpe_fast.reference, rustbpe) takes, at each step, the most frequent adjacent pair and
breaks ties by the smallest pair. Hugging Face's trainers (and gigabpe, which copies them) break ties
differently, so their list leaves the reference's at the first tie while doing the same work. This replays
a token list over the corpus's chunk counts and checks that every merge had the highest count at its
step (ties allowed): the same greedy algorithm, any tie order. A list that passes is "same up to ties";
one that fails did different work and is never counted as the fastest.
"""

from __future__ import annotations

import heapq
from collections import Counter, defaultdict
from typing import Dict, List, Optional, Sequence, Tuple

from benches.vocabs import recover_merges

Pair = Tuple[int, int]


def compare_lists(tokens: Optional[Sequence[bytes]], reference: Optional[Sequence[bytes]]) -> str:
    """ "identical", or where a learned token list (ids 256+) first leaves the reference's."""
    if tokens is None or reference is None:
        return "unchecked: no token list"
    learned = [t for t in tokens if len(t) > 1]
    expected = [t for t in reference if len(t) > 1]
    if learned == expected:
        return "identical"
    first = next(
        (i for i, (a, b) in enumerate(zip(learned, expected)) if a != b), min(len(learned), len(expected))
    )
    shared = len(set(learned) & set(expected))
    return f"first differs at merge {first}; {shared}/{len(expected)} tokens shared"


def _merge_pairs(tokens: Sequence[bytes]) -> Tuple[Dict[int, int], List[Tuple[Pair, int]]]:
    """(byte -> id, [((left id, right id), new id)] in id order) of a token list (id = index)."""
    id_of = {token: index for index, token in enumerate(tokens)}
    byte_ids = {}
    for index, token in enumerate(tokens):
        if len(token) == 1:
            byte_ids[token[0]] = index
    if len(byte_ids) != 256:
        raise ValueError(f"the list has {len(byte_ids)} single-byte tokens, not 256")
    # recover_merges needs rank order = id order among the multi-byte tokens; single bytes are rank-less.
    ordered = [bytes([b]) for b in range(256)] + [t for t in tokens if len(t) > 1]
    merges = []
    for left, right in recover_merges(ordered):
        merges.append(((id_of[left], id_of[right]), id_of[left + right]))
    return byte_ids, merges


def valid_up_to_ties(chunk_counts: Dict[bytes, int], tokens: Sequence[bytes]) -> Tuple[bool, str]:
    """(True, summary) when every merge of ``tokens`` had the highest pair count at its step."""
    try:
        byte_ids, merges = _merge_pairs(tokens)
    except ValueError as exc:
        return False, str(exc)
    words = [[byte_ids[b] for b in chunk] for chunk in chunk_counts]
    weight = list(chunk_counts.values())
    counts: Counter = Counter()
    where: Dict[Pair, set] = defaultdict(set)
    for index, word in enumerate(words):
        for pair in zip(word, word[1:]):
            counts[pair] += weight[index]
            where[pair].add(index)
    # A lazy max-heap: an entry is pushed whenever a pair's count rises; an entry whose count is no longer
    # current is dropped when it reaches the top and pushed again at the pair's current count. So every
    # pair with a positive count has an entry at least as high as its count, and a current top is the max.
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    push, pop = heapq.heappush, heapq.heappop
    for step, (pair, new_id) in enumerate(merges):
        while heap:
            negative, top = heap[0]
            current = counts.get(top, 0)
            if -negative == current:
                break
            pop(heap)
            if current > 0:
                push(heap, (-current, top))
        best = -heap[0][0] if heap else 0
        have = counts.get(pair, 0)
        if have <= 0 or have != best:
            return False, f"merge {step} has count {have}, but a pair with count {best} was available"
        left, right = pair
        for index in where.pop(pair, ()):
            old = words[index]
            new: List[int] = []
            i, size = 0, len(old)
            while i < size:
                if i + 1 < size and old[i] == left and old[i + 1] == right:
                    new.append(new_id)
                    i += 2
                else:
                    new.append(old[i])
                    i += 1
            if len(new) == size:
                continue  # a stale index: the word lost the pair to an earlier merge
            delta: Dict[Pair, int] = {}
            for p in zip(old, old[1:]):
                delta[p] = delta.get(p, 0) - 1
            for p in zip(new, new[1:]):
                delta[p] = delta.get(p, 0) + 1
            w = weight[index]
            for p, d in delta.items():
                if d > 0:
                    counts[p] += d * w
                    where[p].add(index)
                    push(heap, (-counts[p], p))
                elif d < 0:
                    counts[p] += d * w
                    if counts[p] <= 0:
                        del counts[p]
            words[index] = new
    return True, f"each of its {len(merges)} merges had the top pair count at its step"
