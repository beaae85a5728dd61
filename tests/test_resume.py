"""Where the apply stage resumes the bundles topic (streams/resume.py): the rule, in isolation.

The end-to-end proof is tests/test_worker_equivalence.py (a worker killed before its first
offset commit, three times, still counts every event); these pin the rule it relies on.
"""

from __future__ import annotations

from faust.types import TP

from streams.ledger import compacted_key, ledger_key
from streams.resume import BundlePositions
from streams.tables import ledger_end

BUNDLES = "app-bundles"


def test_no_committed_offset_resumes_where_the_ledger_ends() -> None:
    positions = BundlePositions(BUNDLES)
    positions.advance(0, 4)
    assert positions.targets({TP(BUNDLES, 0): None}) == {TP(BUNDLES, 0): 4}


def test_a_committed_offset_behind_the_ledger_is_overtaken() -> None:
    positions = BundlePositions(BUNDLES)
    positions.advance(1, 9)
    assert positions.targets({TP(BUNDLES, 1): 3}) == {TP(BUNDLES, 1): 9}


def test_a_committed_offset_at_the_point_is_kept_and_one_ahead_is_overruled() -> None:
    """Faust acknowledges (and commits) the bundles the apply stage skipped at a gap: a
    committed offset ahead of the point must not be trusted."""
    positions = BundlePositions(BUNDLES)
    positions.advance(2, 5)
    assert positions.targets({TP(BUNDLES, 2): 5}) == {}
    assert positions.targets({TP(BUNDLES, 2): 7}) == {TP(BUNDLES, 2): 5}


def test_nothing_known_leaves_faust_alone_and_other_topics_are_never_touched() -> None:
    positions = BundlePositions(BUNDLES)
    positions.advance(0, 6)
    assert positions.targets({TP(BUNDLES, 1): None}) == {}
    assert positions.targets({TP("app-ledger-changelog", 0): None}) == {}


def test_the_point_never_moves_back() -> None:
    """A rebuild from an older ledger view, or a round of old replays, must not lower it."""
    positions = BundlePositions(BUNDLES)
    positions.advance(0, 8)
    positions.advance(0, 3)
    assert positions.get(0) == 8


def test_ledger_end_is_after_the_newest_round_plain_or_compacted() -> None:
    keys = [ledger_key(0, 2), ledger_key(0, 11), compacted_key(0, 7, 123, 0, 1)]
    assert ledger_end(iter(keys)) == 12
    assert ledger_end(iter([])) == 0
