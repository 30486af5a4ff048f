-- Documented views: the stable SQL interface (see README "Querying results").
-- Metric values are fractions in [0, 1]; reports multiply by 100.

CREATE OR REPLACE VIEW plan AS
SELECT p.experiment, p.dataset, p.method, p.display_name, p.kind, p.family, p.seed, p.cell_id,
       coalesce(c.status, 'pending') AS status, c.error, c.train_s, c.infer_s, c.epochs,
       c.best_epoch, c.best_valid, c.device, c.finished_at
FROM plan_cells p LEFT JOIN cells c USING (cell_id);

CREATE OR REPLACE VIEW per_user_all AS
SELECT p.experiment, p.dataset, p.method, p.kind, p.family, p.seed, m.ranking, m.domain,
       u.user_id, m.user_idx, m.k, m.hr, m.ndcg, m.mrr, m.rank, m.ties,
       m.n_train_domain, m.n_train_total, p.cell_id, c.dataset_fingerprint, c.candidate_set_id
FROM user_metrics m
JOIN cells c ON c.cell_id = m.cell_id AND c.status = 'done'
JOIN plan_cells p ON p.cell_id = m.cell_id
JOIN users u ON u.dataset_fingerprint = c.dataset_fingerprint AND u.user_idx = m.user_idx;

-- One row per (experiment, dataset, method, seed, domain, user, K) under the paper's sampled protocol.
CREATE OR REPLACE VIEW per_user AS
SELECT * EXCLUDE (ranking) FROM per_user_all WHERE ranking = 'sampled';

-- The same against every unseen item (only when protocol.full_ranking = true).
CREATE OR REPLACE VIEW per_user_full AS
SELECT * EXCLUDE (ranking) FROM per_user_all WHERE ranking = 'full';

-- Per-seed domain means: the unit the leaderboard averages.
CREATE OR REPLACE VIEW seed_results AS
SELECT experiment, dataset, method, family, seed, ranking, domain, k,
       count(*) AS n_users, avg(hr) AS hr, avg(ndcg) AS ndcg, avg(mrr) AS mrr,
       avg(CASE WHEN ties > 0 THEN 1.0 ELSE 0.0 END) AS tie_rate
FROM per_user_all
GROUP BY ALL;

-- Mean and sample std (ddof = 1) over seeds.
CREATE OR REPLACE VIEW leaderboard AS
SELECT experiment, dataset, method, family, ranking, domain, k,
       count(*) AS n_seeds, max(n_users) AS n_users,
       avg(mrr) AS mrr_mean, stddev_samp(mrr) AS mrr_std,
       avg(hr) AS hr_mean, stddev_samp(hr) AS hr_std,
       avg(ndcg) AS ndcg_mean, stddev_samp(ndcg) AS ndcg_std,
       avg(tie_rate) AS tie_rate
FROM seed_results
GROUP BY ALL;

CREATE OR REPLACE VIEW timings AS
SELECT experiment, dataset, method, count(*) AS n_seeds, avg(train_s) AS train_s,
       avg(infer_s) AS infer_s, avg(epochs) AS epochs,
       avg(train_s / nullif(epochs, 0)) AS train_s_per_epoch, any_value(device) AS device
FROM plan WHERE status = 'done'
GROUP BY ALL;

CREATE OR REPLACE VIEW training_curves AS
SELECT p.experiment, p.dataset, p.method, p.seed, k.stage, k.domain, k.epoch, k.name, k.value
FROM curves k JOIN plan_cells p ON p.cell_id = k.cell_id;

-- Per-user values (e.g. UCLR temperatures) with the user's total training activity.
CREATE OR REPLACE VIEW user_outputs AS
SELECT p.experiment, p.dataset, p.method, p.seed, v.stage, v.domain, v.name, u.user_id,
       v.user_idx, v.value, a.n_train_total
FROM user_values v
JOIN cells c ON c.cell_id = v.cell_id AND c.status = 'done'
JOIN plan_cells p ON p.cell_id = v.cell_id
JOIN users u ON u.dataset_fingerprint = c.dataset_fingerprint AND u.user_idx = v.user_idx
LEFT JOIN (SELECT candidate_set_id, user_idx, sum(n_train) AS n_train_total FROM train_counts
           GROUP BY ALL) a ON a.candidate_set_id = c.candidate_set_id AND a.user_idx = v.user_idx;

CREATE OR REPLACE VIEW temperatures AS
SELECT * EXCLUDE (name), value AS temperature FROM user_outputs WHERE name = 'temperature';
