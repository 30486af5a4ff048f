-- Results store schema (DuckDB). Tables are written by the runner only; users query the views.
-- Stable interface for SQL: the views per_user, per_user_full, seed_results, leaderboard,
-- cell_status, timings, training_curves. Column names of these views only ever grow.

-- Store-level key/value settings (schema_version: the layout of this file).
CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR);

-- One row per `harness run`: spec, code revision, versions, machine, threads and status.
CREATE TABLE IF NOT EXISTS runs (
    run_id VARCHAR PRIMARY KEY,
    experiment VARCHAR,
    spec_path VARCHAR,
    spec_hash VARCHAR,
    spec_text VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    status VARCHAR,            -- running | finished | interrupted | failed
    git_sha VARCHAR,
    git_dirty BOOLEAN,
    versions VARCHAR,          -- JSON: package versions
    device VARCHAR,
    hostname VARCHAR,
    python VARCHAR,
    platform VARCHAR,
    argv VARCHAR,
    cells_planned INTEGER,
    cells_done INTEGER,
    cells_failed INTEGER,
    threads INTEGER,           -- intra-op threads of each training process (thread policy)
    workers INTEGER            -- training processes side by side
);

-- One row per prepared dataset, keyed by its content fingerprint.
CREATE TABLE IF NOT EXISTS datasets (
    dataset_fingerprint VARCHAR PRIMARY KEY,
    name VARCHAR,
    loader VARCHAR,
    source VARCHAR,            -- JSON: files and preprocessing
    n_users INTEGER,
    created_at TIMESTAMP
);

-- Users, items and interactions of each domain of a prepared dataset.
CREATE TABLE IF NOT EXISTS dataset_domains (
    dataset_fingerprint VARCHAR,
    domain VARCHAR,
    n_users INTEGER,
    n_items INTEGER,
    n_interactions BIGINT,
    PRIMARY KEY (dataset_fingerprint, domain)
);

-- The dense user index of a dataset and the user id of the source data.
CREATE TABLE IF NOT EXISTS users (
    dataset_fingerprint VARCHAR,
    user_idx INTEGER,
    user_id VARCHAR,
    PRIMARY KEY (dataset_fingerprint, user_idx)
);

-- One row per stored split + candidate lists (dataset fingerprint x protocol), with its rule.
CREATE TABLE IF NOT EXISTS candidate_sets (
    candidate_set_id VARCHAR PRIMARY KEY,   -- hash(dataset fingerprint, protocol fingerprint)
    content_hash VARCHAR,                   -- sha256 over every stored list
    dataset_fingerprint VARCHAR,
    protocol_fingerprint VARCHAR,
    protocol VARCHAR,                       -- JSON
    split_rule VARCHAR,
    split_seed INTEGER,
    n_negatives INTEGER,
    n_valid_cases INTEGER,
    n_test_cases INTEGER,
    created_at TIMESTAMP
);

-- The fixed candidate list of every held-out case: its positive and the sampled negatives.
CREATE TABLE IF NOT EXISTS candidates (
    candidate_set_id VARCHAR,
    split VARCHAR,             -- valid | test
    domain VARCHAR,
    user_idx INTEGER,
    positive INTEGER,
    negatives INTEGER[]
);

-- One row per trained (or imported) cell, keyed by its content address: status, cost, device.
CREATE TABLE IF NOT EXISTS cells (
    cell_id VARCHAR PRIMARY KEY,            -- content address of the work (see runner.cells)
    run_id VARCHAR,
    dataset_fingerprint VARCHAR,
    candidate_set_id VARCHAR,
    kind VARCHAR,
    family VARCHAR,
    params VARCHAR,                         -- JSON: fully-resolved typed parameters
    seed INTEGER,
    code_version VARCHAR,
    status VARCHAR,                         -- done | failed
    error VARCHAR,
    started_at TIMESTAMP,
    finished_at TIMESTAMP,
    train_s DOUBLE,
    infer_s DOUBLE,
    epochs INTEGER,
    best_epoch INTEGER,
    best_valid DOUBLE,
    device VARCHAR,
    notes VARCHAR,                          -- JSON
    threads INTEGER                         -- torch intra-op threads it trained with
);

-- Where a cell's rows came from: NULL or 'run' (trained here), 'bundle' (imported, see
-- harness import); the bundle file it came from. Added after the first release: older stores
-- gain the columns on open.
ALTER TABLE cells ADD COLUMN IF NOT EXISTS origin VARCHAR;   -- NULL or 'run': trained here; 'bundle': imported
ALTER TABLE cells ADD COLUMN IF NOT EXISTS bundle VARCHAR;   -- the bundle file an imported cell came from

-- `harness verify`: a stored cell retrained and its per-user rows compared.
CREATE TABLE IF NOT EXISTS verifications (
    cell_id VARCHAR,
    verified_at TIMESTAMP,
    device VARCHAR,                         -- where the retraining ran
    stored_device VARCHAR,                  -- where the stored rows were computed
    rule VARCHAR,                           -- exact | equivalence (other float kernels)
    n_rows INTEGER,
    n_rows_differ INTEGER,                  -- rows whose metrics, rank or ties differ at all
    max_abs_diff DOUBLE,                    -- largest |difference| of hr / ndcg / mrr / rank
    max_mean_ndcg_diff DOUBLE,              -- largest |difference| of a domain's mean NDCG
    ok BOOLEAN,
    train_s DOUBLE,
    infer_s DOUBLE
);

-- Which cells make up each experiment's current plan (replaced on every run of that spec).
CREATE TABLE IF NOT EXISTS plan_cells (
    experiment VARCHAR,
    dataset VARCHAR,
    method VARCHAR,
    seed INTEGER,
    cell_id VARCHAR,
    kind VARCHAR,
    family VARCHAR,
    display_name VARCHAR,
    domains VARCHAR,                        -- JSON list of evaluated domains
    PRIMARY KEY (experiment, dataset, method, seed)
);

-- Per-user metrics of every cell: one row per (cell, ranking, domain, user, K).
CREATE TABLE IF NOT EXISTS user_metrics (
    cell_id VARCHAR,
    ranking VARCHAR,                        -- sampled | full
    domain VARCHAR,
    user_idx INTEGER,
    k INTEGER,
    hr DOUBLE,
    ndcg DOUBLE,
    mrr DOUBLE,
    rank DOUBLE,                            -- expected rank of the positive (1 = best)
    ties INTEGER,                           -- candidates scoring exactly like the positive
    n_train_domain INTEGER,
    n_train_total INTEGER
);

-- Training curves: one value (loss, valid_ndcg, train_s, ...) per cell, stage, domain, epoch.
CREATE TABLE IF NOT EXISTS curves (
    cell_id VARCHAR,
    stage VARCHAR,
    domain VARCHAR,
    epoch INTEGER,
    name VARCHAR,
    value DOUBLE
);

-- Per-user values a method exposes for inspection (UCLR: final temperature per stage).
CREATE TABLE IF NOT EXISTS user_values (
    cell_id VARCHAR,
    stage VARCHAR,
    domain VARCHAR,
    name VARCHAR,
    user_idx INTEGER,
    value DOUBLE
);

-- Training interactions per user and domain under a candidate set's split (activity axis).
CREATE TABLE IF NOT EXISTS train_counts (
    candidate_set_id VARCHAR,
    domain VARCHAR,
    user_idx INTEGER,
    n_train INTEGER
);

-- Written by the report (`harness report` / the end of `harness run`), never by the runner.
-- The settings the report used for an experiment: activity-bucket edges and the sparse-user
-- bound (the views bucket_summary, sparse_summary and temperature_summary follow them), and how
-- significance was decided.
CREATE TABLE IF NOT EXISTS report_settings (
    experiment VARCHAR PRIMARY KEY,
    buckets INTEGER[],                      -- upper-inclusive edges; a last open bucket is added
    sparse_max INTEGER,                     -- sparse users: 1..sparse_max training interactions
    reference VARCHAR,                      -- JSON {dataset: reference method}
    test VARCHAR,                           -- t | wilcoxon: the test behind significance marks
    correction VARCHAR,                     -- holm | bh
    alpha DOUBLE,
    n_boot INTEGER,
    written_at TIMESTAMP
);

-- Paired comparisons on per-user values averaged over seeds (one row per comparison); replaced
-- for an experiment whenever its report is written. Query it through the `significance` view.
CREATE TABLE IF NOT EXISTS significance_results (
    experiment VARCHAR,
    dataset VARCHAR,
    ranking VARCHAR,                        -- sampled | full
    comparison VARCHAR,                     -- reference (method vs reference) | ladder (rung vs previous rung)
    subset VARCHAR,                         -- all | sparse | bucket
    bucket INTEGER,                         -- activity bucket (1-based) when subset = 'bucket'
    bucket_label VARCHAR,
    domain VARCHAR,
    k INTEGER,
    metric VARCHAR,                         -- hr | ndcg | mrr
    method VARCHAR,
    reference VARCHAR,
    n_users INTEGER,                        -- users present for both methods
    method_mean DOUBLE,
    reference_mean DOUBLE,
    mean_diff DOUBLE,                       -- method - reference
    ci_low DOUBLE,                          -- paired percentile bootstrap CI of mean_diff
    ci_high DOUBLE,
    t_stat DOUBLE,                          -- scipy.stats.ttest_rel(method, reference)
    t_p DOUBLE,
    t_p_adj DOUBLE,
    w_stat DOUBLE,                          -- scipy.stats.wilcoxon(method - reference)
    w_p DOUBLE,
    w_p_adj DOUBLE,
    d_z DOUBLE,                             -- Cohen's d_z = mean_diff / sd(diff)
    family VARCHAR,                         -- the comparisons corrected together
    family_size INTEGER,
    test VARCHAR,
    correction VARCHAR,
    alpha DOUBLE,
    significant BOOLEAN,                    -- adjusted p of `test` < alpha
    n_boot INTEGER,
    boot_seed BIGINT,
    method_seed_std DOUBLE,                 -- std over seeds of the method's subset mean
    reference_seed_std DOUBLE,
    n_seeds INTEGER
);

-- Columns added after the first release (stores written by older versions gain them).
ALTER TABLE runs ADD COLUMN IF NOT EXISTS threads INTEGER;
ALTER TABLE runs ADD COLUMN IF NOT EXISTS workers INTEGER;
ALTER TABLE cells ADD COLUMN IF NOT EXISTS threads INTEGER;
-- Hyperparameter search (harness/search): every trial of a searched method per seed, and the
-- selection per seed on validation only. Trials are ordinary cells; only the selected cell is in
-- plan_cells (under the method's name), so no other trial reaches a view of the report.
CREATE TABLE IF NOT EXISTS search_trials (
    experiment VARCHAR,
    dataset VARCHAR,
    method VARCHAR,
    seed INTEGER,
    trial INTEGER,                          -- 1..budget; 0: the method's own params (paper)
    role VARCHAR,                           -- trial | paper
    strategy VARCHAR,                       -- grid | random | tpe
    round INTEGER,                          -- tpe: the round that proposed it (others: 1)
    cell_id VARCHAR,
    search_values VARCHAR,                  -- JSON: the searched parameters' values
    params VARCHAR,                         -- JSON: the resolved parameters of the cell
    PRIMARY KEY (experiment, dataset, method, seed, trial)
);

-- The selected trial of each searched method and seed, and the trial counts behind it.
CREATE TABLE IF NOT EXISTS search_selections (
    experiment VARCHAR,
    dataset VARCHAR,
    method VARCHAR,
    seed INTEGER,
    strategy VARCHAR,
    budget INTEGER,                         -- trials per seed
    trials_proposed INTEGER,
    trials_done INTEGER,
    trials_failed INTEGER,
    complete BOOLEAN,                       -- every trial of the budget has finished
    trial INTEGER,                          -- the selected trial (NULL until complete)
    cell_id VARCHAR,
    chosen VARCHAR,                         -- JSON: the selected values
    validation DOUBLE,                      -- its validation score (cells.best_valid)
    selected_at TIMESTAMP,
    PRIMARY KEY (experiment, dataset, method, seed)
);

-- Provenance of a plugin method (docs/plugins.md): the installed distribution and its version
-- that computed the cell; NULL for built-in methods. Not part of the cell id, which depends on
-- the method's own `version` only.
ALTER TABLE cells ADD COLUMN IF NOT EXISTS method_distribution VARCHAR;  -- plugin distribution (NULL: built-in)
ALTER TABLE cells ADD COLUMN IF NOT EXISTS method_distribution_version VARCHAR;  -- its installed version

-- Search budgets and pruning (issue 24): a selection made once per method on `select_on` seeds
-- (JSON list; NULL: a selection per seed) with the mean validation score it was made on,
-- trials stopped by their pruning rule (cells.status 'pruned'), and each trial's rule (JSON:
-- the part of its cell identity that says what could stop it; NULL: none).
ALTER TABLE search_selections ADD COLUMN IF NOT EXISTS trials_pruned INTEGER;
ALTER TABLE search_selections ADD COLUMN IF NOT EXISTS select_on VARCHAR;
ALTER TABLE search_selections ADD COLUMN IF NOT EXISTS select_score DOUBLE;
ALTER TABLE search_trials ADD COLUMN IF NOT EXISTS prune VARCHAR;

-- Datasets known only from a published data card (harness/store/datacard.py): false until the
-- real data is prepared into this store (NULL: prepared from the data, as before the column).
ALTER TABLE datasets ADD COLUMN IF NOT EXISTS checked BOOLEAN;

-- What computed a cell, as far as it selects float kernels (JSON: CPU model, instruction sets,
-- torch / BLAS / oneDNN versions, threads; GPU, CUDA, driver): harness verify demands exact
-- equality only where it matches (harness/provenance.py). NULL for cells from before it.
ALTER TABLE cells ADD COLUMN IF NOT EXISTS hardware VARCHAR;

-- harness verify's rule in full (harness/runner/verify.py): why it applied, the equivalence
-- margin and its settings, the TOST p-value, both hardware fingerprints, every comparison.
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS reason VARCHAR;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS margin DOUBLE;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS std_fraction DOUBLE;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS min_margin DOUBLE;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS tost_p DOUBLE;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS worst VARCHAR;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS hardware VARCHAR;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS stored_hardware VARCHAR;
ALTER TABLE verifications ADD COLUMN IF NOT EXISTS checks VARCHAR;
