"""One feature's statistics, from TFDV's DatasetFeatureStatistics, as the
reports show them: blank share, value shares, quantiles, and the overlaid plot
of several datasets (training, serving, a previous window)."""

from typing import Dict, List, Optional, Tuple

from markupsafe import Markup

from reports import charts


def feature_stats(dataset, name: str):
  for feature in dataset.features:
    if '.'.join(feature.path.step) == name or feature.name == name:
      return feature
  return None


def _common(feature):
  return (feature.string_stats.common_stats if feature.HasField('string_stats')
          else feature.num_stats.common_stats)


def blank_share(feature, num_examples: int) -> Optional[float]:
  """Share of examples without a value.

  CsvExampleGen writes a blank cell as the feature with no values, which TFDV
  counts as present (num_non_missing): for a feature of at most one value,
  the examples without one are num_missing + num_non_missing - tot_num_values.
  """
  if not num_examples:
    return None
  common = _common(feature)
  empty = common.num_non_missing - common.tot_num_values if common.max_num_values <= 1 else 0
  return (common.num_missing + empty) / num_examples


def value_counts(feature) -> Dict[str, float]:
  """Count per value, from the rank histogram: the counts TFDV's L-infinity
  distance compares (each normalized by its own sum; blanks not in it)."""
  return {b.label: b.sample_count for b in feature.string_stats.rank_histogram.buckets}


def shares(feature) -> Dict[str, float]:
  counts = value_counts(feature)
  total = sum(counts.values())
  return {label: count / total for label, count in counts.items()} if total else {}


def quantile_buckets(feature) -> List[Tuple[float, float, float]]:
  for histogram in feature.num_stats.histograms:
    if histogram.type == histogram.QUANTILES:
      return [(b.low_value, b.high_value, b.sample_count) for b in histogram.buckets]
  return []


def is_categorical(feature) -> bool:
  return feature.HasField('string_stats')


def feature_plot(name: str, datasets: Dict[str, object]) -> Markup:
  """One feature of several DatasetFeatureStatistics, overlaid: shares of
  its values (categorical) or the cumulative share of its values (numeric)."""
  found = {label: feature_stats(d, name) for label, d in datasets.items()}
  found = {label: f for label, f in found.items() if f is not None}
  if not found:
    return charts.no_data(name, 'no statistics')
  if any(is_categorical(f) for f in found.values()):
    by_label = {label: shares(f) for label, f in found.items()}
    totals: Dict[str, float] = {}
    for values in by_label.values():
      for value, share in values.items():
        totals[value] = totals.get(value, 0.0) + share
    categories = _shown_categories(totals)
    return charts.bars(categories, {label: [s.get(c, 0.0) for c in categories]
                                    for label, s in by_label.items()}, f'{name} (share)')
  return charts.cumulative({label: quantile_buckets(f) for label, f in found.items()},
                           f'{name} (cumulative share)')


def _shown_categories(totals: Dict[str, float]) -> List[str]:
  """Ids in their order (hours 0..23) when all fit; else the most frequent
  values first."""
  if len(totals) <= charts.MAX_CATEGORIES and all(v.lstrip('-').isdigit() for v in totals):
    return sorted(totals, key=int)
  return sorted(totals, key=lambda v: (-totals[v], v))[:charts.MAX_CATEGORIES]


def summary_text(feature) -> str:
  if is_categorical(feature):
    top = feature.string_stats.top_values
    return f'{feature.string_stats.unique:,} unique' + (
        f'; most frequent {top[0].value!r}' if top else '')
  s = feature.num_stats
  if not s.common_stats.tot_num_values:
    return 'no values'
  return f'mean {s.mean:.4g}, median {s.median:.4g}, min {s.min:.4g}, max {s.max:.4g}'
