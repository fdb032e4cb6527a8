"""`make gpu-check` (tools/gpu_check.py) runs here, where there is no GPU: it says so, runs the same
checks on the CPU and exits 0. The text-classifier check is skipped here only to save time (the text
classifier has its own tests in tests/test_text.py)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT


@pytest.fixture(scope="module")
def cpu_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    env.pop("WORKBOOK_DEVICE", None)
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "gpu_check.py"), "--out", str(out),
                             "--skip", "text classifier"], capture_output=True, text=True, env=env, timeout=900)
    return result, out


def test_gpu_check_without_cuda_says_so_and_exits_0(cpu_report):
    result, _ = cpu_report
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "CUDA not available: GPU checks not run" in result.stdout


def test_gpu_check_writes_a_json_and_a_markdown_report_where_every_check_passes_or_says_why_not(cpu_report):
    _, out = cpu_report
    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    statuses = {row["check"]: row["status"] for row in report["checks"]}
    assert statuses["fit fp16 + gradient scaler"] == "skipped"  # needs CUDA
    assert {"get_device", "fit checkpoint resume", "fit under torchrun: DDP"} <= set(statuses)
    assert all(s in {"pass", "skipped"} for s in statuses.values()), statuses
    assert all(row.get("reason") for row in report["checks"] if row["status"] == "skipped")
    table = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert "| check | status |" in table and "failed" in table


def test_gpu_check_reports_a_failing_check_as_fail_and_exits_1(tmp_path):
    code = ("import sys; sys.argv = ['gpu_check', '--out', %r, '--only', 'get_device']; "
            "sys.path.insert(0, %r); import gpu_check; "
            "gpu_check.CHECKS[0] = ('get_device', lambda d: (_ for _ in ()).throw(AssertionError('broken')), False); "
            "sys.exit(gpu_check.main())") % (str(tmp_path), str(ROOT / "tools"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "fail (AssertionError: broken)" in result.stdout
