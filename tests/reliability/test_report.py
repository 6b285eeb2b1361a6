"""
The reliability report: the counts of every case the other files of this folder tried, written to
``reliability_report.json`` in pytest's base temporary directory (and ``$PYRO_SEQ_RELIABILITY_REPORT``
if set) and printed; every case tried must have been handled. ``tests/conftest.py`` runs it last.
"""

import json
import os
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from reliability_cases import NOTES, RESULTS, VALID

import pyro_seq

REPO = REPO_ROOT
PACKAGE = Path(pyro_seq.__file__).resolve().parent


# --------------------------------------------------------------------------------------------
# the report (keep last)
# --------------------------------------------------------------------------------------------


def test_reliability_report(tmp_path_factory, capsys):
    """Write and print the counts of every case above; every case tried must have been handled."""
    if not RESULTS:
        pytest.skip("no reliability case ran in this session")
    report = {"groups": {}, "notes": dict(NOTES)}
    for (group, subject, entry, kind), (tried, handled) in sorted(RESULTS.items()):
        s = report["groups"].setdefault(group, {}).setdefault(subject, {
            "cases_tried": 0, "cases_handled": 0, "bad_input_cases": 0, "bad_input_cases_clear_error": 0,
            "valid_input_cases": 0, "valid_input_cases_finite": 0, "examples_tried": 0, "examples_handled": 0,
            "entry_points": set(), "kinds": set(),
        })  # fmt: skip
        ok = handled == tried
        valid = (group, subject, entry, kind) in VALID
        s["cases_tried"] += 1
        s["cases_handled"] += ok
        s["valid_input_cases" if valid else "bad_input_cases"] += 1
        s["valid_input_cases_finite" if valid else "bad_input_cases_clear_error"] += ok
        s["examples_tried"] += tried
        s["examples_handled"] += handled
        s["entry_points"].add(entry)
        s["kinds"].add(kind)
    lines = ["reliability report: distinct (subject, entry point, case kind) cases"]
    total = [0, 0]
    for group, subjects in report["groups"].items():
        for subject, s in subjects.items():
            s["entry_points"], s["kinds"] = sorted(s["entry_points"]), sorted(s["kinds"])
            total[0] += s["cases_tried"]
            total[1] += s["cases_handled"]
            valid = f", valid input finite {s['valid_input_cases_finite']} / {s['valid_input_cases']}" if s["valid_input_cases"] else ""
            label = {
                "kill and resume": "trials ending identical to an uninterrupted run",
                "tampered files": "rejected before parsing",
                "signals": "stopped at a step boundary, one line, resumable",
                "write faults": "one line naming the path, nothing lost",
            }
            lines.append(
                f"  {group:15s} {subject:21s} {label.get(group, 'bad input with a clear error')} {s['bad_input_cases_clear_error']:3d} / "
                f"{s['bad_input_cases']:3d}{valid} ({len(s['entry_points'])} entry points x {len(s['kinds'])} kinds, "
                f"{s['examples_handled']} / {s['examples_tried']} calls)"
            )
    for trial in report["notes"].get("kill_and_resume", []):
        lines.append(f"  kill and resume: {json.dumps(trial)}")
    lines.append(f"  total: {total[1]} / {total[0]} cases handled")
    report["total"] = {"cases_tried": total[0], "cases_handled": total[1]}
    text = json.dumps(report, indent=1, default=sorted)
    path = tmp_path_factory.getbasetemp() / "reliability_report.json"
    path.write_text(text)
    if os.environ.get("PYRO_SEQ_RELIABILITY_REPORT"):
        Path(os.environ["PYRO_SEQ_RELIABILITY_REPORT"]).write_text(text)
    with capsys.disabled():
        print("\n" + "\n".join(lines) + f"\n  written to {path}")
    unhandled = [k for k, (tried, handled) in RESULTS.items() if handled != tried]
    assert total[0] == total[1], unhandled
