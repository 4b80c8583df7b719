"""The model card each pushed version carries (assets.extra/model_card.html):
what the model is for, what it was trained on, how it evaluated overall and
per slice against which thresholds, and what it is known not to do.

The Pusher writes it into the version before the version's directory is
renamed in, so every pushed version has one; TF Serving ignores assets.extra
files other than its warmup requests. The facts come from the push's audit
record (pipeline/components/pusher.py reads them from the Evaluator's output
and, when the run's metadata is reachable, MLMD); the texts from the
example's description (examples/<name>.py: INTENDED_USE and KNOWN_LIMITS when
it has them, else the defaults below).

It is rendered here, not in reports/: the Pusher (pipeline/) writes it, and
the pipeline comes before reports/ in the project's layering
(tests/test_layout.py). Same rules as reports/render.py: autoescaped Jinja2,
undefined values an error.
"""

import math
import os
from typing import Dict, List

import jinja2

from pipeline import metadata

CARD_PATH = os.path.join('assets.extra', 'model_card.html')
# Shown first, in this order; any other metric after them.
LEADING_METRICS = ('examples', 'auc', 'accuracy', 'precision', 'recall')


TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')


def _render(**values) -> str:
  environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                   undefined=jinja2.StrictUndefined, trim_blocks=True,
                                   lstrip_blocks=True)
  return environment.get_template('model_card.html.j2').render(**values)


def number(value, count: bool = False) -> str:
  """As reports/render.py shows numbers: 4,966 for counts, 0.8916 for rates."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  if count or isinstance(value, int):
    return f'{int(round(value)):,}'
  return f'{value:.4f}' if isinstance(value, float) else str(value)


def _example_texts(thresholds: List[Dict]) -> Dict:
  from models import features  # The selected example (examples/<name>.py).
  example = features.EXAMPLE
  summary = ' '.join((example.__doc__ or '').strip().split('\n\n')[0].split())
  intended = getattr(example, 'INTENDED_USE', None) or (
      f'{summary} ({example.TASK.replace("_", " ")}, example {features.EXAMPLE_NAME!r}). '
      'Served through the signatures of this SavedModel by TF Serving or serving.server; '
      'fit for the population and period of the training spans below only.')
  gated = sorted({t['slices'] for t in thresholds})
  limits = list(getattr(example, 'KNOWN_LIMITS', None) or [
      'Evaluated only on the test split of the spans below: other periods, places or '
      'populations are not measured.',
      f'Thresholds gate the slices {", ".join(gated) or "(none)"}; the other slices below are '
      'reported, not gated.',
      'A slice with few examples has noisy metrics: read its example count.'])
  return {'intended_use': intended, 'limits': limits}


def _threshold_text(bounds: Dict) -> str:
  return ', '.join(f'{k} {v}' for k, v in sorted(bounds.items())) or '-'


def _evaluation(evaluation: Dict, blessing: Dict) -> Dict:
  if 'unavailable' in evaluation:
    return {'unavailable': evaluation['unavailable']}
  names = [m for m in LEADING_METRICS if any(m in s['metrics'] for s in evaluation['slices'])]
  names += sorted({m for s in evaluation['slices'] for m in s['metrics']} - set(names))
  return {
      'blessed': 'yes' if blessing.get('blessed') else 'no',
      'validation': {True: 'yes', False: 'no', None: 'not recorded'}[
          evaluation.get('validation_ok')],
      'thresholds': [[t['metric'], t['slices'], _threshold_text(t['value']),
                      _threshold_text(t['change'])] for t in evaluation['thresholds']],
      'header': ['slice'] + names,
      'rows': [[s['slice']] + [number(s['metrics'].get(m), count=(m == 'examples'))
                               for m in names] for s in evaluation['slices']],
  }


def _training(training: Dict) -> Dict:
  if 'unavailable' in training:
    return {'unavailable': training['unavailable']}
  statistics = []
  for examples in training['examples']:
    for split, s in sorted(examples.get('statistics', {}).items(),
                           key=lambda kv: (kv[0] != 'train', kv[0])):
      statistics.append({'span': examples['span'], 'split': split,
                         'examples': number(s['examples'], count=True),
                         'rows': [[f['name'], f['type'], number(f['missing'], count=True)
                                   if f['missing'] is not None else 'n/a', f['summary']]
                                  for f in s['features']]})
  return {'spans': [str(s) for s in training['spans']], 'statistics': statistics,
          'code_fingerprint': training.get('trainer_code_fingerprint') or 'not recorded',
          'pipeline_run': training.get('pipeline_run') or 'not recorded'}


def model_card_html(facts: Dict) -> str:
  """facts: the push record's details plus the per-slice evaluation and statistics."""
  by = facts['by']
  card = {'model': facts['model'], 'version': facts['version'], 'pushed_at': facts['time'],
          'by': f'{by["user"]}@{by["host"]}', 'action_id': facts['action_id'],
          'code': by['code'], **_example_texts(facts['evaluation'].get('thresholds', [])),
          'evaluation': _evaluation(facts['evaluation'], facts['blessing']),
          'training': _training(facts['training'])}
  return _render(title=f'Model card: {facts["model"]} version {facts["version"]}', card=card)


def write_model_card(version_dir: str, facts: Dict) -> str:
  """Into a version folder, local or in a bucket; returns its path."""
  from tfx.dsl.io import fileio
  path = os.path.join(version_dir, CARD_PATH)
  fileio.makedirs(os.path.dirname(path))
  with fileio.open(path, 'w') as f:
    f.write(model_card_html(facts))
  return path


def statistics_of(training: Dict) -> Dict:
  """training with each span's statistics summary read in (for the card)."""
  if 'unavailable' in training:
    return training
  with_statistics = []
  for examples in training['examples']:
    uri = examples.get('statistics_uri')
    with_statistics.append({**examples,
                            'statistics': metadata.statistics_summary(uri) if uri else {}})
  return {**training, 'examples': with_statistics}
