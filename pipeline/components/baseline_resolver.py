"""PreviousBlessedModelStrategy: the Evaluator's baseline, never the candidate
itself, so a rerun with nothing changed stays cached."""

from tfx.dsl.input_resolution.strategies import latest_blessed_model_strategy


class PreviousBlessedModelStrategy(
    latest_blessed_model_strategy.LatestBlessedModelStrategy):
  """The latest blessed model other than the candidate.

  With TFX's strategy, the model a run blesses becomes the next run's
  baseline; when the Trainer is cached that is the candidate itself, and the
  Evaluator re-runs to compare a model with itself. Excluding the candidate
  gives the rerun the same inputs as the run before, so it stays cached.
  Inputs: model, model_blessing (all of them) and candidate (the Trainer's).
  """

  def resolve_artifacts(self, store, input_dict):
    candidate = input_dict['candidate']
    candidate_ids = {model.id for model in candidate}
    earlier = {
        'model': [m for m in input_dict['model'] if m.id not in candidate_ids],
        'model_blessing': input_dict['model_blessing'],
    }
    # Empty lists resolve to empty lists: nothing earlier was blessed.
    return {**super().resolve_artifacts(store, earlier), 'candidate': candidate}
