"""The test suite's time on two commits, over the tests both have.

Run the suite on each commit with ``python -m pytest -q --junitxml=PATH``, then::

    python benchmarks/suite_time.py old.xml new.xml

Tests are matched by name and parameters, whatever file they live in now (issue 27 moved
many), so a suite that grew is compared on what it had before.
"""

from __future__ import annotations

import argparse
import collections
import xml.etree.ElementTree as ET


def load(path: str) -> tuple[dict[str, list[float]], collections.Counter]:
    times: dict[str, list[float]] = collections.defaultdict(list)
    outcomes: collections.Counter = collections.Counter()
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        message = f"{path}: not a readable junit file ({err}); write one with pytest --junitxml"
        raise SystemExit(message) from None
    for case in root.iter("testcase"):
        times[case.get("name")].append(float(case.get("time", 0)))
        if case.find("failure") is not None or case.find("error") is not None:
            outcomes["failed"] += 1
        elif case.find("skipped") is not None:
            outcomes["skipped"] += 1
        else:
            outcomes["passed"] += 1
    return times, outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--show", type=int, default=8, help="tests to list each way")
    args = parser.parse_args()
    old, old_outcomes = load(args.old)
    new, new_outcomes = load(args.new)
    for label, times, outcomes in (("old", old, old_outcomes), ("new", new, new_outcomes)):
        total = sum(map(sum, times.values()))
        print(f"{label}: {sum(map(len, times.values()))} tests, {total:.0f} s, {dict(outcomes)}")
    common = [name for name in old if len(old[name]) == len(new.get(name, ()))]
    if not common:
        raise SystemExit("no test is in both files: are they junit files of this suite?")
    old_s = sum(sum(old[name]) for name in common)
    new_s = sum(sum(new[name]) for name in common)
    count = sum(len(old[name]) for name in common)
    print(
        f"in both: {count} tests, old {old_s:.0f} s, new {new_s:.0f} s, new/old {new_s / old_s:.2f}"
    )
    by_change = sorted(common, key=lambda name: sum(new[name]) - sum(old[name]))
    for title, names in (
        ("faster now:", by_change[: args.show]),
        ("slower now:", by_change[::-1][: args.show]),
    ):
        print(title)
        for name in names:
            print(f"  {name}: {sum(old[name]):.1f} -> {sum(new[name]):.1f}")


if __name__ == "__main__":
    main()
