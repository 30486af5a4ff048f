-- Documented views: the stable SQL interface (docs/querying.md; docs/reference/sql.md is
-- generated from this file by `python -m harness.docgen`). The comment lines directly above
-- each CREATE are its purpose on that page: keep one there. Metric values are fractions in
-- [0, 1]; reports multiply by 100.

-- One row per planned cell. `epochs` and `best_epoch` are what the method reports: BPRMF sums
-- epochs over its per-domain models and reports the latest best epoch over domains; UCLR sums
-- stages A + B + C and reports stage C's latest best epoch; CAT-ART counts its ART stage.
-- `epochs_by_stage` is the full account from the curves, per stage and domain, with each
-- one's best validation epoch ("bprmf/books 40 (best 35); ..."; "best ?" where a stage is
-- validated by another measure). `reused_s` is the training seconds of stages the cell took
-- from the in-process stage cache (UCLR's ladder), not included in its `train_s`.
CREATE OR REPLACE VIEW plan AS
SELECT p.experiment, p.dataset, p.method, p.display_name, p.kind, p.family, p.seed, p.cell_id,
       coalesce(c.status, 'pending') AS status, c.error, c.train_s, c.infer_s, c.epochs,
       c.best_epoch, c.best_valid, c.device, c.finished_at,
       (SELECT string_agg(stage || coalesce('/' || domain, '') || ' ' || n || ' (best '
                          || coalesce(CAST(best AS VARCHAR), '?') || ')', '; '
                          ORDER BY first_seen)
        FROM (SELECT k.stage, k.domain, count(DISTINCT k.epoch) AS n,
                     arg_max(k.epoch, k.value) FILTER (WHERE k.name = 'valid_ndcg') AS best,
                     min(k.rowid) AS first_seen
              FROM curves k WHERE k.cell_id = p.cell_id GROUP BY k.stage, k.domain))
         AS epochs_by_stage,
       coalesce((SELECT sum(CAST(json_extract(c.notes::JSON, '$."' || key || '".seconds')
                                 AS DOUBLE))
                 FROM (SELECT unnest(json_keys(c.notes::JSON)) AS key)
                 WHERE json_extract_string(c.notes::JSON, '$."' || key || '".from_cache')
                       = 'true'), 0) AS reused_s,
       c.threads
FROM plan_cells p LEFT JOIN cells c USING (cell_id);

-- Every per-user metric row of the planned, finished cells, both rankings (`ranking`).
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

-- Training and inference seconds per method (mean and std over its finished seeds; Table 7).
CREATE OR REPLACE VIEW timings AS
SELECT experiment, dataset, method, count(*) AS n_seeds, avg(train_s) AS train_s,
       avg(infer_s) AS infer_s, avg(epochs) AS epochs,
       avg(train_s / nullif(epochs, 0)) AS train_s_per_epoch, any_value(device) AS device,
       stddev_samp(train_s) AS train_s_std, stddev_samp(infer_s) AS infer_s_std,
       string_agg(DISTINCT device, '; ' ORDER BY device) AS devices,
       any_value(kind) AS kind, any_value(family) AS family,
       -- the full cost: the cell's own seconds plus the stages it reused from the stage cache
       avg(train_s + reused_s) AS train_s_full, stddev_samp(train_s + reused_s) AS train_s_full_std,
       avg(reused_s) AS reused_s
FROM plan WHERE status = 'done'
GROUP BY experiment, dataset, method;

-- Wall seconds per training epoch of every method and stage (from the curves; cached UCLR
-- stages replay the timings of the run that computed them).
CREATE OR REPLACE VIEW epoch_timings AS
SELECT p.experiment, p.dataset, p.method, k.stage, k.domain, count(DISTINCT p.seed) AS n_seeds,
       count(*) AS n_epochs, avg(k.value) AS train_s_per_epoch,
       median(k.value) AS train_s_per_epoch_median, sum(k.value) AS train_s_total,
       any_value(c.device) AS device
FROM curves k JOIN plan_cells p ON p.cell_id = k.cell_id
JOIN cells c ON c.cell_id = k.cell_id AND c.status = 'done'
WHERE k.name = 'train_s'
GROUP BY ALL;

-- Every logged training value (losses, valid_ndcg, seconds) per cell, stage, domain, epoch.
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

-- UCLR's learned per-user temperatures (user_outputs rows named 'temperature').
CREATE OR REPLACE VIEW temperatures AS
SELECT * EXCLUDE (name), value AS temperature FROM user_outputs WHERE name = 'temperature';

-- ---------------------------------------------------------------------------------------------
-- Report views (docs/report.md, docs/querying.md): activity buckets, sparse users, paired statistics.
-- Activity buckets follow `report_settings` (written by the report from the spec) and fall back
-- to the protocol stored with the candidate set.

-- The datasets of each experiment's current plan with their data and candidate-set identities.
CREATE OR REPLACE VIEW experiment_datasets AS
SELECT DISTINCT p.experiment, p.dataset, c.dataset_fingerprint, c.candidate_set_id
FROM plan_cells p JOIN cells c USING (cell_id);

-- Each experiment's dataset with its candidate set, protocol, activity buckets and sparse bound.
CREATE OR REPLACE VIEW experiment_protocol AS
SELECT e.experiment, e.dataset, e.dataset_fingerprint, e.candidate_set_id, s.content_hash,
       s.protocol,
       coalesce(r.buckets, CAST(json_extract(s.protocol, '$.buckets') AS INTEGER[]),
                [0, 2, 4, 8, 16, 32, 64, 128]) AS buckets,
       coalesce(r.sparse_max, CAST(json_extract(s.protocol, '$.sparse_max') AS INTEGER), 2)
           AS sparse_max
FROM experiment_datasets e
JOIN candidate_sets s ON s.candidate_set_id = e.candidate_set_id
LEFT JOIN report_settings r ON r.experiment = e.experiment;

-- One row per activity bucket: training interactions in [lo, hi] (hi NULL: open last bucket).
CREATE OR REPLACE VIEW activity_buckets AS
WITH edges AS (
    SELECT experiment, dataset, candidate_set_id, sparse_max, unnest(buckets) AS hi,
           unnest(range(1, len(buckets) + 1)) AS bucket
    FROM experiment_protocol
), closed AS (
    SELECT experiment, dataset, candidate_set_id, sparse_max, CAST(bucket AS INTEGER) AS bucket,
           coalesce(lag(hi) OVER (PARTITION BY experiment, dataset, candidate_set_id
                                  ORDER BY bucket) + 1, 0) AS lo,
           hi
    FROM edges
), buckets AS (
    SELECT * FROM closed
    UNION ALL
    SELECT experiment, dataset, candidate_set_id, sparse_max,
           CAST(len(buckets) + 1 AS INTEGER) AS bucket,
           CASE WHEN len(buckets) = 0 THEN 0 ELSE buckets[len(buckets)] + 1 END AS lo,
           CAST(NULL AS INTEGER) AS hi
    FROM experiment_protocol
)
SELECT experiment, dataset, candidate_set_id, sparse_max, bucket, lo, hi,
       CASE WHEN hi IS NULL THEN lo || '+' WHEN lo = hi THEN CAST(lo AS VARCHAR)
            ELSE lo || '-' || hi END AS bucket_label
FROM buckets;

-- per_user_all plus the user's activity bucket and sparse flag (both rankings; see `ranking`).
CREATE OR REPLACE VIEW per_user_buckets AS
SELECT u.*, b.bucket, b.bucket_label, b.lo AS bucket_lo, b.hi AS bucket_hi,
       (u.n_train_domain BETWEEN 1 AND b.sparse_max) AS is_sparse
FROM per_user_all u
JOIN activity_buckets b
  ON b.experiment = u.experiment AND b.dataset = u.dataset
 AND b.candidate_set_id = u.candidate_set_id
 AND u.n_train_domain >= b.lo AND u.n_train_domain <= coalesce(b.hi, 2147483647);

-- Per-user values averaged over seeds: the unit of every paired test in the report.
-- (Same rows as grouping per_user_buckets by user; aggregated on integer keys first for speed.)
CREATE OR REPLACE VIEW user_means AS
WITH m AS (
    SELECT p.experiment, p.dataset, p.method, m.ranking, m.domain, m.k, m.user_idx,
           c.dataset_fingerprint, c.candidate_set_id, any_value(p.family) AS family,
           any_value(m.n_train_domain) AS n_train_domain,
           any_value(m.n_train_total) AS n_train_total, count(*) AS n_seeds,
           avg(m.hr) AS hr, avg(m.ndcg) AS ndcg, avg(m.mrr) AS mrr
    FROM user_metrics m
    JOIN cells c ON c.cell_id = m.cell_id AND c.status = 'done'
    JOIN plan_cells p ON p.cell_id = m.cell_id
    GROUP BY p.experiment, p.dataset, p.method, m.ranking, m.domain, m.k, m.user_idx,
             c.dataset_fingerprint, c.candidate_set_id
)
SELECT m.experiment, m.dataset, m.method, m.family, m.ranking, m.domain, m.k, u.user_id,
       m.n_train_domain, m.n_train_total, b.bucket, b.bucket_label,
       (m.n_train_domain BETWEEN 1 AND b.sparse_max) AS is_sparse, m.n_seeds,
       m.hr, m.ndcg, m.mrr
FROM m
JOIN users u ON u.dataset_fingerprint = m.dataset_fingerprint AND u.user_idx = m.user_idx
JOIN activity_buckets b
  ON b.experiment = m.experiment AND b.dataset = m.dataset
 AND b.candidate_set_id = m.candidate_set_id
 AND m.n_train_domain >= b.lo AND m.n_train_domain <= coalesce(b.hi, 2147483647);

-- Per-seed means within each activity bucket of training interactions in the domain.
CREATE OR REPLACE VIEW bucket_seed_results AS
SELECT experiment, dataset, method, family, seed, ranking, domain, k, bucket, bucket_label,
       bucket_lo, bucket_hi, count(*) AS n_users, avg(hr) AS hr, avg(ndcg) AS ndcg,
       avg(mrr) AS mrr
FROM per_user_buckets
GROUP BY ALL;

-- Mean and sample std over seeds of bucket_seed_results (Table 3's activity breakdown).
CREATE OR REPLACE VIEW bucket_summary AS
SELECT experiment, dataset, method, family, ranking, domain, k, bucket, bucket_label, bucket_lo,
       bucket_hi, count(*) AS n_seeds, max(n_users) AS n_users,
       avg(mrr) AS mrr_mean, stddev_samp(mrr) AS mrr_std,
       avg(hr) AS hr_mean, stddev_samp(hr) AS hr_std,
       avg(ndcg) AS ndcg_mean, stddev_samp(ndcg) AS ndcg_std
FROM bucket_seed_results
GROUP BY ALL;

-- Per-seed means over sparse users (1..sparse_max training interactions in the domain).
CREATE OR REPLACE VIEW sparse_seed_results AS
SELECT experiment, dataset, method, family, seed, ranking, domain, k, count(*) AS n_users,
       avg(hr) AS hr, avg(ndcg) AS ndcg, avg(mrr) AS mrr
FROM per_user_buckets WHERE is_sparse
GROUP BY ALL;

-- Mean and sample std over seeds of sparse_seed_results (paper Table 3).
CREATE OR REPLACE VIEW sparse_summary AS
SELECT experiment, dataset, method, family, ranking, domain, k, count(*) AS n_seeds,
       max(n_users) AS n_users,
       avg(mrr) AS mrr_mean, stddev_samp(mrr) AS mrr_std,
       avg(hr) AS hr_mean, stddev_samp(hr) AS hr_std,
       avg(ndcg) AS ndcg_mean, stddev_samp(ndcg) AS ndcg_std
FROM sparse_seed_results
GROUP BY ALL;

-- Interactions per user and domain under the split: training plus held-out (validation, test).
CREATE OR REPLACE VIEW user_activity AS
SELECT e.experiment, e.dataset, t.domain, u.user_id, t.user_idx, t.n_train,
       coalesce(h.n_heldout, 0) AS n_heldout, t.n_train + coalesce(h.n_heldout, 0) AS n_interactions
FROM experiment_datasets e
JOIN train_counts t ON t.candidate_set_id = e.candidate_set_id
JOIN users u ON u.dataset_fingerprint = e.dataset_fingerprint AND u.user_idx = t.user_idx
LEFT JOIN (SELECT candidate_set_id, domain, user_idx, count(*) AS n_heldout
           FROM candidates GROUP BY ALL) h
  ON h.candidate_set_id = t.candidate_set_id AND h.domain = t.domain AND h.user_idx = t.user_idx;

-- Users with >= 1 interaction in the domain per activity bucket of training interactions
-- (Figs. 3/4). Per domain the buckets add up to dataset_domains.n_users.
CREATE OR REPLACE VIEW activity_distribution AS
WITH grid AS (
    SELECT b.experiment, b.dataset, b.bucket, b.bucket_label, b.lo, b.hi, d.domain
    FROM activity_buckets b
    JOIN experiment_datasets e
      ON e.experiment = b.experiment AND e.dataset = b.dataset
     AND e.candidate_set_id = b.candidate_set_id
    JOIN dataset_domains d ON d.dataset_fingerprint = e.dataset_fingerprint
)
SELECT g.experiment, g.dataset, g.domain, g.bucket, g.bucket_label, g.lo AS bucket_lo,
       g.hi AS bucket_hi, count(a.user_idx) AS n_users
FROM grid g
LEFT JOIN user_activity a
  ON a.experiment = g.experiment AND a.dataset = g.dataset AND a.domain = g.domain
 AND a.n_interactions > 0 AND a.n_train >= g.lo AND a.n_train <= coalesce(g.hi, 2147483647)
GROUP BY ALL;

-- Temperatures (UCLR) averaged per user over seeds, then mean and std over the users of each
-- activity bucket of total training interactions (Fig. 5).
CREATE OR REPLACE VIEW temperature_summary AS
WITH per_user AS (
    SELECT experiment, dataset, method, stage, domain, user_id,
           coalesce(n_train_total, 0) AS n_train_total, count(*) AS n_seeds,
           avg(temperature) AS temperature
    FROM temperatures
    GROUP BY ALL
)
SELECT t.experiment, t.dataset, t.method, t.stage, t.domain, b.bucket, b.bucket_label,
       b.lo AS bucket_lo, b.hi AS bucket_hi, count(*) AS n_users, max(t.n_seeds) AS n_seeds,
       avg(t.temperature) AS temperature_mean, stddev_samp(t.temperature) AS temperature_std
FROM per_user t
JOIN activity_buckets b
  ON b.experiment = t.experiment AND b.dataset = t.dataset
 AND t.n_train_total >= b.lo AND t.n_train_total <= coalesce(b.hi, 2147483647)
GROUP BY ALL;

-- Each planned method with its kind, family, resolved parameters and (UCLR) backbone.
CREATE OR REPLACE VIEW method_info AS
SELECT p.experiment, p.dataset, p.method, any_value(p.display_name) AS display_name,
       any_value(p.kind) AS kind, any_value(p.family) AS family, any_value(c.params) AS params,
       json_extract_string(any_value(c.params), '$.backbone') AS backbone,
       count(*) AS n_cells, count(*) FILTER (WHERE c.status = 'done') AS n_done
FROM plan_cells p LEFT JOIN cells c USING (cell_id)
GROUP BY p.experiment, p.dataset, p.method;

-- Paired tests behind the report's significance marks (see significance_results).
CREATE OR REPLACE VIEW significance AS
SELECT * FROM significance_results;
