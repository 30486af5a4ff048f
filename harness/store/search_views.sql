-- Search views (docs/search.md); kept apart from views.sql so that a read-only
-- connection to a store older than the search tables still gets every other view.

-- Every trial with its cell's status and validation score (test metrics stay in user_metrics
-- and never enter a report table unless the trial is the selected one). `validation` is NULL
-- unless the cell is done: a pruned trial's partial curve is in `curves`, where it stopped in
-- `pruned_at` ("stage[/domain] validation i"). Role 'final': the values selected on other seeds
-- (select_on), run on this seed.
CREATE OR REPLACE VIEW search_trial_results AS
SELECT t.experiment, t.dataset, t.method, t.seed, t.trial, t.role, t.strategy, t.round,
       t.cell_id, t.search_values, t.params, coalesce(c.status, 'pending') AS status,
       CASE WHEN c.status = 'done' THEN c.best_valid END AS validation, c.best_epoch, c.epochs,
       c.train_s, c.infer_s,
       (s.cell_id IS NOT NULL AND s.trial = t.trial AND t.role <> 'paper') AS selected,
       t.prune,
       CASE WHEN c.status = 'pruned' THEN
           json_extract_string(c.notes, '$.pruned.stage')
           || coalesce('/' || json_extract_string(c.notes, '$.pruned.domain'), '')
           || ' validation ' || json_extract_string(c.notes, '$.pruned.validation') END
           AS pruned_at,
       TRY_CAST(json_extract_string(c.notes, '$.cpu_s') AS DOUBLE) AS cpu_s
FROM search_trials t
LEFT JOIN cells c ON c.cell_id = t.cell_id
LEFT JOIN search_selections s
  ON s.experiment = t.experiment AND s.dataset = t.dataset AND s.method = t.method
 AND s.seed = t.seed;

-- The selection per seed: chosen values, validation score, trials used, strategy. With
-- select_on (JSON list of seeds) every seed shows the one selection made on those seeds;
-- `select_score` is the mean validation score it was made on.
CREATE OR REPLACE VIEW selections AS
SELECT s.experiment, s.dataset, s.method, s.seed, s.strategy, s.chosen AS chosen_params,
       s.validation, s.trials_done + s.trials_failed + coalesce(s.trials_pruned, 0)
           AS trials_used, s.budget, s.trials_failed, s.complete, s.trial, s.cell_id, c.params,
       coalesce(s.trials_pruned, 0) AS trials_pruned, s.select_on, s.select_score
FROM search_selections s LEFT JOIN cells c ON c.cell_id = s.cell_id;

-- What each method's search cost, per dataset: its trial cells (each counted once, whatever
-- seeds share it) by status, their seconds of training + inference (wall clock) and process
-- CPU seconds (measured per cell; for cells stored before that was measured, wall seconds x
-- threads stand in, `cpu_estimated` counts them), then the same for the paper-settings cells
-- and the final runs of the selected values. A pruned trial costs only what it ran.
CREATE OR REPLACE VIEW search_costs AS
WITH cells_of AS (
    SELECT DISTINCT t.experiment, t.dataset, t.method,
           CASE WHEN t.role = 'trial' THEN 'trial' ELSE t.role END AS role, t.cell_id
    FROM search_trials t
), costed AS (
    SELECT x.*, c.status,
           c.train_s + coalesce(c.infer_s, 0) AS wall_s,
           TRY_CAST(json_extract_string(c.notes, '$.cpu_s') AS DOUBLE) AS cpu_measured,
           (c.train_s + coalesce(c.infer_s, 0)) * coalesce(c.threads, 1) AS cpu_bound
    FROM cells_of x LEFT JOIN cells c ON c.cell_id = x.cell_id
)
SELECT experiment, dataset, method,
       count(*) FILTER (WHERE role = 'trial') AS trial_cells,
       count(*) FILTER (WHERE role = 'trial' AND status = 'done') AS trials_done,
       count(*) FILTER (WHERE role = 'trial' AND status = 'pruned') AS trials_pruned,
       count(*) FILTER (WHERE role = 'trial' AND status = 'failed') AS trials_failed,
       count(*) FILTER (WHERE role = 'trial' AND status IS NULL) AS trials_pending,
       coalesce(sum(wall_s) FILTER (WHERE role = 'trial'), 0) AS trial_wall_s,
       coalesce(sum(coalesce(cpu_measured, cpu_bound)) FILTER (WHERE role = 'trial'), 0)
           AS trial_cpu_s,
       coalesce(sum(coalesce(cpu_measured, cpu_bound))
                FILTER (WHERE role = 'trial' AND status = 'pruned'), 0) AS pruned_cpu_s,
       coalesce(sum(coalesce(cpu_measured, cpu_bound)) FILTER (WHERE role = 'paper'), 0)
           AS paper_cpu_s,
       coalesce(sum(coalesce(cpu_measured, cpu_bound)) FILTER (WHERE role = 'final'), 0)
           AS final_cpu_s,
       coalesce(sum(coalesce(cpu_measured, cpu_bound)), 0) AS total_cpu_s,
       count(*) FILTER (WHERE status IS NOT NULL AND cpu_measured IS NULL) AS cpu_estimated
FROM costed
GROUP BY ALL;
