"""The one-line reason a FAILED transition carries."""

from tidegate.scheduler.loop import failure_summary

TRACEBACK = """Traceback (most recent call last):
  File "pipeline.py", line 9, in <module>
    run()
  File "pipeline.py", line 5, in run
    raise ValueError("no such column: price")
ValueError: no such column: price [while running 'Parse']
"""


def test_a_traceback_is_summed_up_by_its_exception_line() -> None:
    assert failure_summary(TRACEBACK) == "ValueError: no such column: price [while running 'Parse']"


def test_a_chained_traceback_ends_with_the_last_exception() -> None:
    chained = (
        TRACEBACK
        + "\nDuring handling of the above exception, another exception occurred:\n\n"
        + TRACEBACK.replace("ValueError: no such column: price [while running 'Parse']", "RuntimeError: gave up")
    )
    assert failure_summary(chained) == "RuntimeError: gave up"


def test_a_plain_error_is_its_first_line() -> None:
    assert failure_summary("the worker is gone\nmore detail") == "the worker is gone"


def test_an_empty_error_still_says_failed() -> None:
    assert failure_summary("  \n") == "failed"


def test_a_long_line_is_cut() -> None:
    summary = failure_summary("x" * 2000)
    assert len(summary) == 500 and summary.endswith("…")
