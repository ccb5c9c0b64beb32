"""Keys of the messages between the ServerApp and the ClientApps, defined once.

Everything a site sends is in these records: weights (``arrays``), numbers (``metrics``, and
``suite``: the evaluation suite's numbers on a synthetic sample; ``disease-mix``: its disease
histogram plus Gaussian noise, charged like any release), its site id and accountant
name (``site``) and its signed privacy ledger (``ledger``: one entry per charge to its
accountant, mechanism and ε only). Nothing row-level, ever.
"""

# message types: Flower routes a "query.<action>" message to the handler registered for that action
BUNDLE_ACTION = "bundle"  # server → site: the bundle offered (its hash), or its files to verify and cache
SUITE_ACTION = "suite"  # server → site: a synthetic sample to run the evaluation suite on
# server → site, once per run before round 1: the site's noisy disease histogram (a Python name: Flower requires one)
MIX_ACTION = "disease_mix"
# server → site, in a survey run: the site's noisy counts of public candidate codes and event times
SURVEY_ACTION = "survey"
BUNDLE_QUERY, SUITE_QUERY, MIX_QUERY = f"query.{BUNDLE_ACTION}", f"query.{SUITE_ACTION}", f"query.{MIX_ACTION}"
SURVEY_QUERY = f"query.{SURVEY_ACTION}"

# records
ARRAYS = "arrays"
CONFIG = "config"
METRICS = "metrics"
SITE = "site"
BUNDLE_OFFER = "bundle-offer"
BUNDLE_FILES = "bundle-files"
BUNDLE_STATUS = "bundle-status"
LEDGER = "ledger"
SYNTHETIC = "synthetic"  # server → site: a synthetic sample to evaluate (TrajectoryTensors.to_arrays)
SUITE = "suite"  # site → server: the evaluation suite's numbers, or why the site declined
MIX = "disease-mix"  # site → server: the noisy disease histogram and the run it was charged in
SURVEY = "survey"  # server → site: the request (survey.*); site → server: the noisy release and its run

# config keys (server → site, per round)
SERVER_ROUND = "server-round"
RUN_ID = "run-id"
ROUNDS = "rounds"
LOCAL_STEPS = "local-steps"
LR = "lr"
GUIDANCE = "guidance"
BUNDLE_SHA256 = "bundle-sha256"
ACCOUNTANT = "accountant"
SEED = "seed"

# metric keys (site → server)
NUM_EXAMPLES = "num-examples"
LOSS = "loss"
EPSILON = "epsilon"
DELTA = "delta"
NOISE_MULTIPLIER = "noise-multiplier"
SAMPLE_RATE = "sample-rate"
STEPS = "steps"
CLIP_NORM = "clip-norm"
NOISE_MULTIPLICITY = "noise-multiplicity"
REFUSED = "refused"
BUDGET_EPSILON = "budget-epsilon"
EVAL_LOSS_SUM = "eval-loss-sum"  # noisy Σ of clipped per-patient losses (DP, charged)
EVAL_COUNT = "eval-count"  # noisy patient count (same release)
EVAL_LOSS_SUM_STD = "eval-loss-sum-std"
EVAL_COUNT_STD = "eval-count-std"
EVALUATE_METRICS = (EVAL_LOSS_SUM, EVAL_COUNT, EVAL_LOSS_SUM_STD, EVAL_COUNT_STD, EPSILON, BUDGET_EPSILON, DELTA,
                    REFUSED)
MIX_METRICS = (EPSILON, DELTA, BUDGET_EPSILON, NOISE_MULTIPLIER, REFUSED)  # of the disease-mix reply
TRAIN_METRICS = (NUM_EXAMPLES, LOSS, EPSILON, DELTA, NOISE_MULTIPLIER, SAMPLE_RATE, STEPS, CLIP_NORM,
                 NOISE_MULTIPLICITY, REFUSED, BUDGET_EPSILON)

# suite record keys (site → server)
SUITE_METRICS = "metrics-json"  # shared.evaluation.suite.evaluate()'s dict as JSON: numbers only
SUITE_DECLINED = "declined"  # the reason a site did not evaluate ("" when it did)

# disease-mix record keys (site → server)
MIX_COUNTS = "counts"  # patients per study disease (bundle order) plus N(0, σ²) each; [] when declined
MIX_RUN = "charged-in"  # the run whose ledger entry (round 0, kind histogram) charged this release

# survey record keys (server → site: the request, client.vocabulary_survey.SurveyRequest; site → server: the release)
SURVEY_MAX_CODES = "max-codes"
SURVEY_TIME_WEIGHT = "time-weight"
SURVEY_TIME_EDGES = "time-edges"  # list of days from the index date where an event-time bin ends
SURVEY_CODES = "codes"  # noisy patients per candidate code (the bundle's candidates order); [] when declined
SURVEY_TIME = "time"  # noisy patient-weighted event mass per time bin; [] when declined
SURVEY_RUN = "charged-in"  # the run whose ledger entry (round 0, kind histogram) charged this release

# site record keys
SITE_ID = "site-id"

# ledger record keys
LEDGER_ENTRIES = "entries"  # the site's ledger as JSON Lines (shared.privacy.ledger.export_entries)

# bundle status values
CACHED = "cached"
NEED = "need"
VERIFIED = "verified"
