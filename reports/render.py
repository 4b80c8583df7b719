"""HTML from the autoescaped Jinja2 templates in reports/templates/, and the
small formatting rules every report shares."""

import math
import os

import jinja2
from markupsafe import Markup

TEMPLATES = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'templates')


def _environment() -> jinja2.Environment:
  return jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                            undefined=jinja2.StrictUndefined, trim_blocks=True,
                            lstrip_blocks=True)


def render(template: str, **values) -> str:
  return _environment().get_template(template).render(**values)


def status(ok: bool, good: str = 'ok', bad: str = 'ANOMALY') -> Markup:
  return Markup('<span class="{}">{}</span>').format('ok' if ok else 'bad', good if ok else bad)


def number(value, count: bool = False) -> str:
  """4966 for counts, 0.8916 for rates, n/a for an undefined value."""
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return 'n/a'
  if count or isinstance(value, int):
    return f'{int(round(value)):,}'
  if isinstance(value, float):
    return f'{value:.4f}'
  return str(value)
