"""Which uids an updated job's operators run under (transformNameMapping onto operator uids)."""

import pytest

from tidegate.errors import FailedPrecondition
from tidegate.updates.compatibility import read_state_uids, state_uids


def test_a_renamed_operator_runs_under_its_old_uid() -> None:
    assert state_uids({}, {"running-total": "total-v2"}, ["count", "total-v2"]) == {"total-v2": "running-total"}


def test_no_renames_means_every_operator_runs_under_its_own_uid() -> None:
    assert state_uids({}, {}, ["count", "total"]) == {}
    assert state_uids({}, {"count": "count"}, ["count"]) == {}


def test_renames_compose_across_updates() -> None:
    first = state_uids({}, {"a": "b"}, ["b"])
    assert state_uids(first, {"b": "c"}, ["c"]) == {"c": "a"}
    assert state_uids(first, {}, ["b"]) == {"b": "a"}  # an unchanged name keeps the uid it runs under


def test_renaming_back_runs_under_the_own_uid_again() -> None:
    assert state_uids({"b": "a"}, {"b": "a"}, ["a"]) == {}


def test_two_operators_swapping_names_swap_their_states() -> None:
    assert state_uids({}, {"a": "b", "b": "a"}, ["a", "b"]) == {"a": "b", "b": "a"}


def test_running_under_a_uid_another_operator_has_is_refused() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        state_uids({}, {"a": "b"}, ["a", "b"])  # b takes a's state, and a new operator a is there too
    assert refused.value.reason == "UPDATE_INCOMPATIBLE"
    assert "'b' would carry the state of 'a'" in refused.value.message


def test_the_artifact_reads_back() -> None:
    assert read_state_uids(None) == {}
    assert read_state_uids(b'{"b": "a"}') == {"b": "a"}
