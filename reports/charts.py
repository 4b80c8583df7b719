"""Inline SVG charts for the HTML reports: the pages need no network and no
JavaScript library, and open from a file or a CI artifact store.

Every drawn mark carries its value (data-value) and every chart its scale
(data-plot-height, data-y-max), so a test can check in a browser that what is
drawn is what was measured. A chart with nothing to draw says "no data".
"""

from typing import Dict, List, Optional, Sequence, Tuple

from markupsafe import Markup, escape

COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b']
MAX_CATEGORIES = 24  # Values per categorical plot: all of them (hours), or the most frequent.
# A numeric axis stops at the 90th percentile when the top decile spans more
# than the other nine: the tail of a few huge trips would hide the rest.
CLIP_QUANTILE = 0.9

TOP, LEFT = 20, 44


def _color(i: int) -> str:
  return COLORS[i % len(COLORS)]


def _legend(names: Sequence[str], x: float) -> str:
  return ''.join(
      f'<rect x="{x}" y="{4 + 14 * i}" width="10" height="10" fill="{_color(i)}"/>'
      f'<text x="{x + 14}" y="{13 + 14 * i}" font-size="11">{escape(n)}</text>'
      for i, n in enumerate(names))


def _frame(width: int, height: int, title: str, body: str, names: Sequence[str],
           plot_w: float, plot_h: float, y_max: float, y_format: str,
           y_min: float = 0.0) -> Markup:
  axes = (f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{LEFT + plot_w}" y2="{TOP + plot_h}" '
          f'stroke="#444"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}" '
          'stroke="#444"/>')
  ticks = ''.join(
      f'<text x="{LEFT - 3}" y="{TOP + plot_h * (1 - f) + 3:.1f}" font-size="9" '
      f'text-anchor="end">{escape(y_format.format(y_min + (y_max - y_min) * f))}</text>'
      for f in (0, 0.5, 1))
  return Markup(
      f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
      f'height="{height}" role="img" aria-label="{escape(title)}" '
      f'data-plot-height="{plot_h:.1f}" data-y-max="{y_max!r}" data-y-min="{y_min!r}">'
      f'<text x="{LEFT}" y="12" font-size="12" font-weight="bold">{escape(title)}</text>'
      f'{axes}{ticks}{body}{_legend(names, LEFT + plot_w + 10)}</svg>')


def no_data(title: str, reason: str = 'no data', width: int = 460, height: int = 80) -> Markup:
  """An empty chart's place: its title and why nothing is drawn."""
  return Markup(
      f'<svg class="chart" data-empty="true" xmlns="http://www.w3.org/2000/svg" width="{width}" '
      f'height="{height}" role="img" aria-label="{escape(title)}">'
      f'<text x="{LEFT}" y="12" font-size="12" font-weight="bold">{escape(title)}</text>'
      f'<text x="{width / 2}" y="{height / 2 + 8}" font-size="13" fill="#777" '
      f'text-anchor="middle">{escape(reason)}</text></svg>')


def bars(categories: Sequence, series: Dict[str, Sequence[Optional[float]]], title: str,
         y_max: Optional[float] = None, width: int = 460, height: int = 200,
         value_format: str = '{:.2f}') -> Markup:
  """Grouped vertical bars: a group per category, a bar per series.

  A None value (undefined, e.g. the AUC of a one-class slice) draws no bar
  but 'n/a'. y_max fixes the scale (1 for rates); else the highest value."""
  values = [v for vs in series.values() for v in vs if v is not None]
  if not categories or not values:
    return no_data(title, width=width)
  bottom = 50
  plot_w, plot_h = width - LEFT - 120, height - TOP - bottom
  y_max = y_max or max(values) or 1.0
  group_w = plot_w / len(categories)
  bar_w = group_w * 0.8 / len(series)
  parts = []
  for s, (name, vs) in enumerate(series.items()):
    for i, value in enumerate(vs):
      x = LEFT + i * group_w + group_w * 0.1 + s * bar_w
      label = f'{name} {categories[i]}: '
      if value is None:
        parts.append(f'<text class="na" x="{x + bar_w / 2:.1f}" y="{TOP + plot_h - 2}" '
                     f'font-size="7" text-anchor="middle" data-series="{escape(name)}" '
                     f'data-category="{escape(categories[i])}">n/a<title>'
                     f'{escape(label)}n/a</title></text>')
        continue
      h = plot_h * min(value, y_max) / y_max
      parts.append(
          f'<rect class="bar" x="{x:.1f}" y="{TOP + plot_h - h:.2f}" width="{bar_w:.1f}" '
          f'height="{h:.2f}" fill="{_color(s)}" data-series="{escape(name)}" '
          f'data-category="{escape(categories[i])}" data-value="{value!r}"><title>'
          f'{escape(label + value_format.format(value))}</title></rect>')
  label_size = 9 if len(categories) <= 12 else 7  # Many values: smaller, so they don't overlap.
  for i, category in enumerate(categories):
    x = LEFT + (i + 0.5) * group_w
    parts.append(f'<text class="category" x="{x:.1f}" y="{TOP + plot_h + 12}" '
                 f'font-size="{label_size}" '
                 f'text-anchor="end" transform="rotate(-35 {x:.1f} {TOP + plot_h + 12})">'
                 f'{escape(str(category)[:14])}</text>')
  return _frame(width, height, title, ''.join(parts), list(series), plot_w, plot_h, y_max,
                value_format)


def cumulative(series: Dict[str, Sequence[Tuple[float, float, float]]], title: str,
               width: int = 460, height: int = 200) -> Markup:
  """Cumulative share of values (0..1) against the value, one line per series,
  from (low, high, count) buckets (TFDV's equal-mass QUANTILES histogram:
  fine where the data is dense, unlike its equal-width STANDARD one).

  A point mass (60 % of tips are 0) is a vertical step; a long tail is cut at
  the 90th percentile, the cut said under the axis."""
  series = {name: buckets for name, buckets in series.items() if _total(buckets) > 0}
  if not series:
    return no_data(title, width=width)
  bottom = 34
  plot_w, plot_h = width - LEFT - 120, height - TOP - bottom
  lo = min(b[0] for buckets in series.values() for b in buckets)
  top = max(b[1] for buckets in series.values() for b in buckets)
  hi = max(_axis_end(buckets) for buckets in series.values())
  span = (hi - lo) or 1.0
  x_of = lambda v: LEFT + plot_w * (min(v, hi) - lo) / span
  y_of = lambda share: TOP + plot_h * (1 - share)
  parts = []
  for s, (name, buckets) in enumerate(series.items()):
    points = _cumulative_points(buckets)
    path = ' '.join(f'{x_of(v):.1f},{y_of(c):.1f}' for v, c in points if v <= hi) + (
        f' {x_of(hi):.1f},{y_of(_share_below(points, hi)):.1f}' if top > hi else '')
    parts.append(f'<polyline class="cdf" points="{path}" fill="none" stroke="{_color(s)}" '
                 f'stroke-width="1.5" data-series="{escape(name)}"><title>{escape(name)}'
                 '</title></polyline>')
  parts.append(f'<text x="{LEFT}" y="{height - 14}" font-size="10">{lo:.4g}</text>'
               f'<text x="{LEFT + plot_w}" y="{height - 14}" font-size="10" '
               f'text-anchor="end">{hi:.4g}</text>')
  if top > hi:
    parts.append(f'<text class="clipped" x="{LEFT}" y="{height - 2}" font-size="9" '
                 f'fill="#777">axis cut at {hi:.4g}; values reach {top:.4g}</text>')
  return _frame(width, height, title, ''.join(parts), list(series), plot_w, plot_h, 1.0,
                '{:.0%}')


def _total(buckets) -> float:
  return sum(b[2] for b in buckets)


def _cumulative_points(buckets) -> List[Tuple[float, float]]:
  """(value, share of values <= value) at every bucket edge."""
  total, seen = _total(buckets), 0.0
  points = [(buckets[0][0], 0.0)]
  for low, high, count in buckets:
    points.append((low, seen / total))
    seen += count
    points.append((high, seen / total))
  return points


def _share_below(points, value: float) -> float:
  """The cumulative share at value, linear between bucket edges."""
  for (v0, c0), (v1, c1) in zip(points, points[1:]):
    if v0 <= value <= v1:
      return c1 if v1 == v0 else c0 + (c1 - c0) * (value - v0) / (v1 - v0)
  return 1.0


def _axis_end(buckets) -> float:
  """The buckets' top value, or their 90th percentile when the top decile
  alone spans more than all the rest."""
  lo, top = buckets[0][0], buckets[-1][1]
  points = _cumulative_points(buckets)
  q = next((v for v, c in points if c >= CLIP_QUANTILE - 1e-9), top)
  return q if top - q > q - lo else top


def lines(series: Dict[str, Sequence[Tuple[float, float]]], title: str,
          marker: Optional[float] = None, marker_label: str = '', width: int = 460,
          height: int = 200, value_format: str = '{:.3f}') -> Markup:
  """One line per series through its (x, y) points, e.g. a metric against
  the training step; the y axis spans the values (a loss is not a rate), and
  an optional vertical marker at x (the exported step)."""
  series = {name: sorted(points) for name, points in series.items() if points}
  if not series:
    return no_data(title, width=width)
  bottom = 34
  plot_w, plot_h = width - LEFT - 120, height - TOP - bottom
  xs = [x for points in series.values() for x, _ in points]
  ys = [y for points in series.values() for _, y in points]
  x_lo, x_hi = min(xs + [0]), max(xs) or 1
  y_lo, y_hi = min(ys), max(ys)
  pad = (y_hi - y_lo) * 0.05 or abs(y_hi) * 0.05 or 1.0
  y_lo, y_hi = y_lo - pad, y_hi + pad
  x_of = lambda x: LEFT + plot_w * (x - x_lo) / ((x_hi - x_lo) or 1)
  y_of = lambda y: TOP + plot_h * (y_hi - y) / (y_hi - y_lo)
  parts = []
  for s, (name, points) in enumerate(series.items()):
    path = ' '.join(f'{x_of(x):.1f},{y_of(y):.1f}' for x, y in points)
    parts.append(f'<polyline class="line" points="{path}" fill="none" stroke="{_color(s)}" '
                 f'stroke-width="1.5" data-series="{escape(name)}"/>')
    parts += [f'<circle class="point" cx="{x_of(x):.1f}" cy="{y_of(y):.2f}" r="2" '
              f'fill="{_color(s)}" data-series="{escape(name)}" data-x="{x!r}" '
              f'data-value="{y!r}"><title>{escape(name)} at {x:g}: '
              f'{escape(value_format.format(y))}</title></circle>' for x, y in points]
  if marker is not None:
    parts.append(f'<line class="marker" x1="{x_of(marker):.1f}" y1="{TOP}" '
                 f'x2="{x_of(marker):.1f}" y2="{TOP + plot_h}" stroke="#777" '
                 f'stroke-dasharray="3,3" data-x="{marker!r}"><title>{escape(marker_label)}'
                 '</title></line>')
  parts.append(f'<text x="{LEFT}" y="{height - 14}" font-size="10">{x_lo:g}</text>'
               f'<text x="{LEFT + plot_w}" y="{height - 14}" font-size="10" '
               f'text-anchor="end">{x_hi:g}</text>')
  return _frame(width, height, title, ''.join(parts), list(series), plot_w, plot_h, y_hi,
                value_format, y_min=y_lo)
