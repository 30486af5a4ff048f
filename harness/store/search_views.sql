-- Search views (README "Hyperparameter search"); kept apart from views.sql so that a read-only
-- connection to a store older than the search tables still gets every other view.

-- Every trial with its cell's status and validation score (test metrics stay in user_metrics
-- and never enter a report table unless the trial is the selected one).
CREATE OR REPLACE VIEW search_trial_results AS
SELECT t.experiment, t.dataset, t.method, t.seed, t.trial, t.role, t.strategy, t.round,
       t.cell_id, t.search_values, t.params, coalesce(c.status, 'pending') AS status,
       c.best_valid AS validation, c.best_epoch, c.epochs, c.train_s, c.infer_s,
       (s.cell_id IS NOT NULL AND s.trial = t.trial) AS selected
FROM search_trials t
LEFT JOIN cells c ON c.cell_id = t.cell_id
LEFT JOIN search_selections s
  ON s.experiment = t.experiment AND s.dataset = t.dataset AND s.method = t.method
 AND s.seed = t.seed;

-- The selection per seed: chosen values, validation score, trials used, strategy.
CREATE OR REPLACE VIEW selections AS
SELECT s.experiment, s.dataset, s.method, s.seed, s.strategy, s.chosen AS chosen_params,
       s.validation, s.trials_done + s.trials_failed AS trials_used, s.budget, s.trials_failed,
       s.complete, s.trial, s.cell_id, c.params
FROM search_selections s LEFT JOIN cells c ON c.cell_id = s.cell_id;
