"""The run report, built from the session's pipeline run, checked as HTML and
in a real browser (headless Chromium: `apt-get install -y chromium`)."""

import os

os.environ.setdefault('TF_USE_LEGACY_KERAS', '1')

import re
import shutil
import subprocess

import pytest

from pipeline import report

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu',
                  '--disable-background-networking', '--disable-component-update',
                  '--disable-sync', '--no-first-run']


def chromium() -> str:
  found = shutil.which('chromium') or shutil.which('chromium-browser')
  if not found:
    pytest.fail('headless Chromium is needed: apt-get install -y chromium')
  return found


def render(html_path, tmp_path):
  """(charts drawn, DOM) after Chromium ran the page's scripts.

  The page's closing script counts the SVG charts with a non-empty layout
  box; it only runs if nothing before it failed."""
  profile = tmp_path / 'chromium-profile'
  dom = subprocess.run(
      [chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}', '--dump-dom',
       f'file://{os.path.abspath(html_path)}'],
      capture_output=True, text=True, timeout=120, check=True).stdout
  marker = re.search(r'data-report-ready="(\d+)"', dom)
  assert marker, 'the report script did not run to its end:\n' + dom[-2000:]
  return int(marker.group(1)), dom


@pytest.fixture(scope='module')
def run_report(pipeline_run, tmp_path_factory):
  config, summary = pipeline_run
  path = report.write_run_report(config, str(tmp_path_factory.mktemp('report') / 'report.html'))
  with open(path) as f:
    return path, f.read(), config, summary


def test_report_holds_every_section(run_report):
  _, text, config, summary = run_report
  for heading in ('Data statistics', 'Anomalies (ExampleValidator)', 'Schema in use',
                  'Evaluation and blessing', 'Thresholds', 'By trip_start_hour',
                  'By payment_type', 'Pushed, and lineage'):
    assert f'>{heading}<' in text, heading
  assert 'BLESSED' in text and '{&quot;lowerBound&quot;: 0.8}' in text  # The floors used.
  assert f'{summary["metrics"]["auc"]:.4f}' in text  # The candidate's AUC.
  # The version the latest push points at (later tests may have pushed again).
  from pipeline import progress
  pushed = progress.LatestRun(progress.open_store(config.metadata_path), config.pipeline_name,
                            'Pusher').one('pushed_model')
  assert os.path.basename(progress.custom_property(pushed, 'pushed_destination')) in text
  assert 'Credit Card' in text and 'fare (density)' in text


def test_report_draws_in_chromium(run_report, tmp_path):
  path, text, _, _ = run_report
  charts, dom = render(path, tmp_path)
  svgs = text.count('<svg class="chart"')
  # A plot per schema feature, and AUC/accuracy per slice for both slices.
  assert svgs >= 18 + 2
  assert charts == svgs  # Every chart laid out with a size: none failed to draw.
  assert dom.count('<rect') > 100


def test_report_cli(pipeline_run, tmp_path):
  config, _ = pipeline_run
  out = tmp_path / 'r.html'
  assert report.main(['--output-root', config.path(config.output_root), '--out', str(out)]) == 0
  assert out.exists() and out.read_text().startswith('<!DOCTYPE html>')
